#!/usr/bin/env python
"""Seconds per search episode in ``--mode quant`` / ``joint``, split into what builds the compressed
model (prune, quantize) and what evaluates it (the val forward passes).

    python scripts/bench_quant_episode.py                         # lenet5/digits + resnet20/CIFAR-10, quant
    python scripts/bench_quant_episode.py --cases lenet5 --modes quant joint --episodes 30
    python scripts/bench_quant_episode.py --out bench_out/quant_episode.json

Cases: ``lenet5`` is ``reference/lenet5-digits.pt`` on sklearn digits (val 300); ``resnet20`` is an
untrained ResNet-20 (timing depends only on shapes) on CIFAR-10 with 1000 val images
(``get_dataset("cifar10", data_dir=DATA_DIR, val_size=1000)``). Actions are uniform random with a
fixed seed, so two runs (e.g. before/after a change) time the same policies. ``overhead`` is the
share of the episode's wall time (all ``env.step`` calls) that is not the evaluation forward passes;
the first ``--warmup`` episodes (cold caches) are reported separately.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import Experiment

ROOT = Path(__file__).resolve().parents[1]

TARGETS = {"quant": "size=0.125", "joint": "bitops=0.02"}


def _case(name: str, data_dir: str):
    from amc.data import get_dataset
    from amc.models import build_model

    if name == "lenet5":
        from amc.training import load_checkpoint

        model, _ = load_checkpoint(str(ROOT / "reference" / "lenet5-digits.pt"))
        return model.eval(), get_dataset("digits")
    if name == "resnet20":
        splits = get_dataset("cifar10", data_dir=data_dir, val_size=1000)
        torch.manual_seed(0)
        model = build_model("resnet20", num_classes=10, in_channels=3, image_size=(32, 32)).eval()
        return model, splits
    raise SystemExit(f"unknown case {name!r}; valid: lenet5, resnet20")


def _run(env, episodes: int, rng: np.random.Generator) -> list[dict[str, float]]:
    rows = []
    for _ in range(episodes):
        env.reset(seed=0)
        done = False
        t0 = time.perf_counter()
        while not done:
            _, _, done, _, info = env.step(rng.random(1))
        wall = time.perf_counter() - t0
        t = info["timing"]
        rows.append({"wall": wall, "prune": t.get("prune", 0.0) + t.get("reconstruct", 0.0),
                     "quantize": t.get("quantize", 0.0), "evaluate": t["evaluate"],
                     "accuracy": float(info["metrics"]["accuracy"])})
    return rows


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    keys = ("wall", "prune", "quantize", "evaluate")
    out = {k: statistics.mean(r[k] for r in rows) for k in keys}
    out["overhead"] = 1.0 - out["evaluate"] / out["wall"]
    # medians resist the load spikes of a shared machine
    out.update({f"median_{k}": statistics.median(r[k] for r in rows) for k in keys})
    out["median_overhead"] = statistics.median(1.0 - r["evaluate"] / r["wall"] for r in rows)
    out["episodes"] = len(rows)
    return out


def arguments(ap) -> None:
    ap.add_argument("--cases", nargs="+", default=["lenet5", "resnet20"], choices=["lenet5", "resnet20"])
    ap.add_argument("--modes", nargs="+", default=["quant"], choices=list(TARGETS))
    ap.add_argument("--episodes", type=int, default=20, help="timed episodes per case (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="first episodes, reported apart (caches fill)")
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--seed", type=int, default=0)


def body(args) -> dict:
    from envs import CompressionEnv, EnvConfig

    results = []
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print("seconds per episode: mean over the episodes, then the median (robust to load spikes); overhead ="
          " share of the episode that is not the evaluation forward passes")
    header = (f"{'case':<9} {'mode':<6} {'phase':<6} {'n':>4} | {'s/episode':>9} {'prune':>7} {'quantize':>8} "
              f"{'evaluate':>8} {'overhead':>8} | {'median':>8} {'quantize':>8} {'evaluate':>8} {'overhead':>8}")
    print(header)
    for case in args.cases:
        model, splits = _case(case, args.data_dir)
        for mode in args.modes:
            t0 = time.perf_counter()
            env = CompressionEnv(model, splits, EnvConfig(mode=mode, target=TARGETS[mode], seed=args.seed))
            setup = time.perf_counter() - t0
            rng = np.random.default_rng(args.seed)
            warm = _run(env, args.warmup, rng)
            timed = _run(env, args.episodes, rng)
            entry = {"case": case, "mode": mode, "target": TARGETS[mode], "env_setup_s": setup,
                     "warmup": _summary(warm), "timed": _summary(timed),
                     "accuracies": [r["accuracy"] for r in warm + timed]}
            results.append(entry)
            for phase, s in (("warmup", entry["warmup"]), ("timed", entry["timed"])):
                if s:
                    print(f"{case:<9} {mode:<6} {phase:<6} {s['episodes']:>4} | {s['wall']:>9.4f} {s['prune']:>7.4f} "
                          f"{s['quantize']:>8.4f} {s['evaluate']:>8.4f} {100 * s['overhead']:>7.1f}% | "
                          f"{s['median_wall']:>8.4f} {s['median_quantize']:>8.4f} {s['median_evaluate']:>8.4f} "
                          f"{100 * s['median_overhead']:>7.1f}%")
            sys.stdout.flush()
    return {"threads": args.threads, "results": results}


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/quant_episode.json")

if __name__ == "__main__":
    raise SystemExit(EXPERIMENT.main())
