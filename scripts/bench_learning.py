#!/usr/bin/env python
"""Does DDPG really learn? Best val accuracy DDPG finds after its warm-up vs the best warm-up (random)
episode vs the uniform policy at the same budget, over several seeds. Prints a table, writes JSON.

    python scripts/bench_learning.py --checkpoint reference/lenet5-fashion-mnist.pt \
        --dataset fashion-mnist --data-dir ../shared/datasets/fashion-mnist --target macs=0.5 \
        --episodes 300 --warmup 100 --seeds 0 1 2 --out bench_out/learning

Accuracy is top-1 on the search's held-out val split, without fine-tuning (AMC's protocol).
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

from benchmarks.harness import Experiment, search_once


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "episodes.csv") as f:
        return list(csv.DictReader(f))


def _ms(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def arguments(ap) -> None:
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--target", default="macs=0.5")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-limit", type=int, default=None,
                    help="val images the reward uses (a fixed subset of the checkpoint's own val split)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise-decay", type=float, default=0.95)
    ap.add_argument("--noise-sigma", type=float, default=0.5)
    ap.add_argument("--no-final-reward-to-all", action="store_true")


def body(args) -> dict:
    out = args.out
    common = dict(checkpoint=args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, target=args.target,
                  env_kwargs={"eval_limit": args.eval_limit} if args.eval_limit else {})
    runs = []
    for seed in args.seeds:
        run_dir = out / f"ddpg-s{seed}"
        search_once(run_dir, **common, agent="ddpg", episodes=args.episodes, warmup=args.warmup, seed=seed,
                    noise_decay=args.noise_decay, noise_sigma=args.noise_sigma,
                    final_reward_to_all=not args.no_final_reward_to_all)
        rows = _rows(run_dir)
        warm = [float(r["accuracy"]) for r in rows if r["phase"] == "warmup"]
        learn = [float(r["accuracy"]) for r in rows if r["phase"] != "warmup"]
        last = learn[-20:] if learn else []
        runs.append({"seed": seed, "best_warmup": max(warm), "best_after_warmup": max(learn) if learn else None,
                     "mean_last_20": statistics.fmean(last) if last else None,
                     "mean_warmup": statistics.fmean(warm)})
    uniform = search_once(out / "uniform", **common, agent="uniform", episodes=30, warmup=0, seed=0)["best_accuracy"]
    result = {"config": vars(args), "runs": runs, "uniform": uniform,
              "ddpg_beats_warmup": sum(r["best_after_warmup"] > r["best_warmup"] for r in runs),
              "ddpg_beats_uniform": sum(r["best_after_warmup"] > uniform for r in runs)}
    print(f"{args.dataset}, {args.target}, {args.episodes} episodes ({args.warmup} warm-up), "
          f"noise sigma {args.noise_sigma} x{args.noise_decay}/episode, seeds {args.seeds}")
    print("| | val top-1 (%) |\n| --- | --- |")
    print(f"| best random warm-up episode | {_ms([r['best_warmup'] for r in runs])} |")
    print(f"| best DDPG episode after warm-up | {_ms([r['best_after_warmup'] for r in runs])} |")
    print(f"| DDPG, mean of its last 20 episodes | {_ms([r['mean_last_20'] for r in runs])} |")
    print(f"| uniform (bisected to the budget) | {uniform:.2f} |")
    print(f"DDPG beat its warm-up in {result['ddpg_beats_warmup']}/{len(runs)} seeds, "
          f"uniform in {result['ddpg_beats_uniform']}/{len(runs)}")
    return result


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/learning", result="learning.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
