"""Where random episodes end against the budget: the share of the budget they use, with and without a band.

Plays the same uniform random actions in envs that differ only in ``budget_band`` and prints, per band, the
achieved cost over the target (sorted) and how many episodes use at least ``1 - --within`` of the budget.
Episodes far under the budget waste accuracy; the band is what keeps a search's exploration near it. Only the
costs matter here, so each episode is scored on a few val images (``--eval-limit``)::

    python scripts/check_budget_band.py --checkpoint reference/resnet20-cifar10-kd-resnet56.pt --dataset cifar10 \\
        --data-dir data --mode joint --target bitops=0.016134 --bands 0 0.02 --out bench_out/budget_band.json
"""

from __future__ import annotations

import sys

import numpy as np

from agents._base import play_episode
from amc.data import get_dataset
from amc.policy import parse_target
from amc.training import load_checkpoint
from benchmarks.harness import Experiment
from envs import CompressionEnv, EnvConfig


def arguments(ap) -> None:
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", default=None, help="default: the checkpoint's")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--mode", default="joint", choices=("prune", "quant", "joint"))
    ap.add_argument("--target", default="bitops=0.016134")
    ap.add_argument("--bands", type=float, nargs="+", default=[0.0, 0.02])
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--eval-limit", type=int, default=64, help="val images per episode (costs are what is measured)")
    ap.add_argument("--within", type=float, default=0.02, help="count the episodes using at least 1 - WITHIN of it")
    ap.add_argument("--seed", type=int, default=0)


def body(args) -> dict:
    model, ckpt = load_checkpoint(args.checkpoint)
    dataset = args.dataset or ckpt.get("data", {}).get("dataset")
    splits = get_dataset(dataset, data_dir=args.data_dir)
    metric, ratio = parse_target(args.target)
    out = {"checkpoint": args.checkpoint, "dataset": dataset, "mode": args.mode, "target": args.target, "bands": {}}
    for band in args.bands:
        env = CompressionEnv(model, splits, EnvConfig(mode=args.mode, target=args.target, budget_band=band,
                                                      eval_limit=args.eval_limit, proxy="vanilla"))
        rng = np.random.default_rng(args.seed)  # the same actions for every band
        used = []
        for _ in range(args.episodes):
            info = play_episode(env, rng.random(env.n_decisions), seed=0)
            used.append(info["metrics"][f"{metric}_ratio"] / ratio)
        used = sorted(used)
        within = sum(u >= 1 - args.within - 1e-9 for u in used)
        out["bands"][str(band)] = {"used": used, "within": within, "median": float(np.median(used))}
        print(f"band {band:g}: {within} of {len(used)} episodes use at least {1 - args.within:.0%} of the budget, "
              f"median {np.median(used):.3f}, lowest {used[0]:.3f}", flush=True)
    return out


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/budget_band.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
