#!/usr/bin/env python
"""Search-speed benchmark: seconds per episode of a DDPG search, split into prune, reconstruct,
evaluate, the rest of the environment (clipping, observations) and the agent (action selection,
replay, gradient updates). Prints a table and writes JSON.

    python scripts/bench_episode.py --dataset cifar10 --data-dir data/cifar10-jpeg --model resnet20 \
        --episodes 30 --warmup 10 --out bench_out/episode.json [--checkpoint CKPT] [--reconstruct]

Timing depends on nothing but shapes, so without ``--checkpoint`` a freshly initialised model is used.
Take timings with nothing else running.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from agents.search import SearchConfig, run_search
from amc.utils import atomic_write_json
from envs import CompressionEnv


class TimedEnv(CompressionEnv):
    """CompressionEnv that records the wall time of each episode's steps and its timing split."""

    episodes: list[dict[str, float]] = []

    def reset(self, *, seed=None, options=None):
        self._step_s = 0.0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        t = time.perf_counter()
        out = super().step(action)
        self._step_s += time.perf_counter() - t
        if out[2]:
            timing = dict(out[4]["timing"])
            timing["env_total"] = self._step_s
            TimedEnv.episodes.append(timing)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--checkpoint")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir")
    ap.add_argument("--target", default="macs=0.5")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--val-size", type=float, default=None, help="val images used for the reward")
    ap.add_argument("--reconstruct", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench_out/episode.json")
    args = ap.parse_args()

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
                           episodes=args.episodes, warmup=args.warmup, seed=0, reconstruct=args.reconstruct,
                           run_dir=str(Path(tmp) / "run"), threads=args.threads,
                           val_size=args.val_size)
        run_search(cfg, env_factory=TimedEnv)
        with open(Path(tmp) / "run" / "episodes.csv") as f:
            rows = list(csv.DictReader(f))
    env_rows = TimedEnv.episodes
    split: dict[str, dict[str, float]] = {}
    for phase in ("warmup", "explore"):
        idx = [i for i, r in enumerate(rows) if r["phase"] == phase and i > 0]  # episode 1 includes set-up
        if not idx:
            continue
        total = np.mean([float(rows[i]["episode_time_s"]) for i in idx])
        parts = {k: float(np.mean([env_rows[i].get(k, 0.0) for i in idx]))
                 for k in ("prune", "reconstruct", "quantize", "evaluate", "env_total")}
        env_other = parts.pop("env_total") - sum(parts.values())
        split[phase] = {"episode_s": total, **parts, "env_other": env_other,
                        "agent": max(0.0, total - sum(parts.values()) - env_other)}
        split[phase]["non_eval_fraction"] = 1 - parts["evaluate"] / total
    result = {"model": args.model, "dataset": args.dataset, "target": args.target, "episodes": args.episodes,
              "warmup": args.warmup, "reconstruct": args.reconstruct, "threads": args.threads,
              "decisions_per_episode": None, "split": split}
    atomic_write_json(args.out, result)
    print(f"{args.model} on {args.dataset}, {args.target}, reconstruct={args.reconstruct}, seconds per episode:")
    keys = ("episode_s", "prune", "reconstruct", "quantize", "evaluate", "env_other", "agent", "non_eval_fraction")
    print(f"{'phase':>8} " + " ".join(f"{k:>12}" for k in keys))
    for phase, s in split.items():
        print(f"{phase:>8} " + " ".join(f"{s[k]:>12.4f}" for k in keys))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
