"""How far a half-precision reward (``--eval-precision bf16``) moves from the fp32 one.

Runs the same random episodes in two envs that differ only in ``eval_precision`` and prints the
accuracy differences (the policies are identical: precision changes the measurement only)::

    python scripts/check_eval_precision.py --checkpoint reference/resnet20-cifar10.pt --dataset cifar10 \\
        --data-dir data --target macs=0.9 --action-low 0.8 --episodes 8 --out bench_out/eval_precision.json
"""

from __future__ import annotations

import sys

import numpy as np

from amc.data import get_dataset
from amc.training import load_checkpoint
from benchmarks.harness import Experiment
from envs import CompressionEnv, EnvConfig


def episode_accuracy(env: CompressionEnv, actions: np.ndarray) -> float:
    env.reset(seed=0)
    for a in actions:
        _, _, terminated, _, info = env.step(np.array([a], dtype=np.float32))
        if terminated:
            return float(info["metrics"]["accuracy"])
    raise RuntimeError("the episode did not end")


def arguments(ap) -> None:
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", default=None, help="default: the checkpoint's")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--target", default="macs=0.5")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp16"))
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--action-low", type=float, default=0.0,
                    help="random actions are drawn from [LOW, 1]; e.g. 0.8 for mild pruning that keeps accuracy high")
    ap.add_argument("--seed", type=int, default=0)


def body(args) -> dict:
    model, ckpt = load_checkpoint(args.checkpoint)
    dataset = args.dataset or ckpt.get("data", {}).get("dataset")
    splits = get_dataset(dataset, data_dir=args.data_dir)
    ref = CompressionEnv(model, splits, EnvConfig(target=args.target))
    half = CompressionEnv(model, splits, EnvConfig(target=args.target, eval_precision=args.precision))
    rng = np.random.default_rng(args.seed)
    rows = []
    for _ in range(args.episodes):
        actions = rng.uniform(args.action_low, 1.0, ref.n_decisions)
        a32, a16 = episode_accuracy(ref, actions), episode_accuracy(half, actions)
        rows.append({"fp32": a32, args.precision: a16, "diff": a16 - a32})
        print(f"fp32 {a32:6.2f}   {args.precision} {a16:6.2f}   diff {a16 - a32:+.2f}", flush=True)
    worst = max(abs(r["diff"]) for r in rows)
    doc = {"checkpoint": args.checkpoint, "dataset": dataset, "target": args.target, "action_low": args.action_low, "val_images": len(ref.val_x),
           "base": {"fp32": ref.base_accuracy, args.precision: half.base_accuracy}, "episodes": rows,
           "max_abs_diff": worst}
    print(f"base fp32 {ref.base_accuracy:.2f} vs {args.precision} {half.base_accuracy:.2f}; "
          f"largest episode difference {worst:.2f} points on {len(ref.val_x)} val images")
    return doc


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/eval_precision.json", threads=2)

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
