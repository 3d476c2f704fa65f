#!/usr/bin/env python
"""Search-speed benchmark: seconds per episode of a DDPG search, split into prune, reconstruct,
quantize, evaluate, the rest of the environment (clipping, observations) and the agent (action
selection, replay, gradient updates, recording). Prints a table and writes JSON.

    python scripts/bench_episode.py --dataset cifar10 --data-dir data/cifar10-jpeg --model resnet20 \
        --episodes 30 --warmup 10 --out bench_out/episode.json [--checkpoint CKPT] [--reconstruct]

Timing depends on nothing but shapes, so without ``--checkpoint`` a freshly initialised model is used.
Take timings with nothing else running. The timing itself is :class:`benchmarks.harness.TimedEnv` and
:func:`benchmarks.harness.episode_split`, which ``amc bench`` uses for every search too.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from agents import read_episodes
from agents.search import SearchConfig, run_search
from benchmarks.harness import TIMING_KEYS, Experiment, TimedEnv, episode_split
from envs import CompressionEnv


def arguments(ap) -> None:
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--checkpoint")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir")
    ap.add_argument("--target", default="macs=0.5")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--val-size", type=float, default=None, help="val images used for the reward")
    ap.add_argument("--reconstruct", action="store_true")
    ap.add_argument("--proxy", default="auto", help="evaluation proxy (amc.proxies)")
    ap.add_argument("--calibration-size", type=int, default=256, help="train images of the proxy")
    ap.add_argument("--eval-limit", type=int, help="evaluate the reward on the first N val images only")
    ap.add_argument("--eval-precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                    help="precision of the reward's evaluation")


def body(args) -> dict:
    records: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:  # timing does not depend on the weights: an untrained model will do
            from amc.data import get_dataset
            from amc.models import ModelSpec, build_model
            from amc.training import save_checkpoint

            splits = get_dataset(args.dataset, data_dir=args.data_dir)
            spec = ModelSpec(args.model, num_classes=splits.num_classes, in_channels=splits.in_channels,
                             image_size=splits.image_size)
            checkpoint = str(Path(tmp) / "untrained.pt")
            save_checkpoint(checkpoint, model=build_model(spec), model_spec=spec, config={}, metrics={})
        cfg = SearchConfig(checkpoint=checkpoint,
                           dataset=args.dataset, data_dir=args.data_dir, target=args.target, agent="ddpg",
                           episodes=args.episodes, warmup=args.warmup, seed=0, reconstruct=args.reconstruct or None,
                           proxy=args.proxy, calibration_size=args.calibration_size,
                           eval_precision=args.eval_precision,
                           env_kwargs={"eval_limit": args.eval_limit} if args.eval_limit else {},
                           run_dir=str(Path(tmp) / "run"), threads=args.threads,
                           val_size=args.val_size)
        summary = run_search(cfg, env_factory=lambda *a, **k: TimedEnv(CompressionEnv(*a, **k), records))
        rows = read_episodes(Path(tmp) / "run" / "episodes.csv")
    split = episode_split(records, [str(r.get("phase") or "") for r in rows])
    result = {"model": args.model, "dataset": args.dataset, "target": args.target, "episodes": args.episodes,
              "warmup": args.warmup, "reconstruct": args.reconstruct, "threads": args.threads,
              "proxy": args.proxy, "calibration_size": args.calibration_size, "eval_limit": args.eval_limit,
              "eval_precision": args.eval_precision,
              "decisions_per_episode": summary.get("decisions_per_episode"), "split": split}
    print(f"{args.model} on {args.dataset}, {args.target}, proxy {args.proxy} ({args.calibration_size} images), "
          f"reward on {args.eval_limit or 'all'} val images, eval {args.eval_precision}, seconds per episode:")
    keys = ("episode_s", *TIMING_KEYS, "env_other", "agent", "evaluate_fraction")
    print(f"{'phase':>8} " + " ".join(f"{k:>17}" for k in keys))
    for phase, s in split.items():
        print(f"{phase:>8} " + " ".join(f"{s[k]:>17.4f}" for k in keys))
    return result


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/episode.json", threads=2)

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
