#!/usr/bin/env python
"""Benchmark the search agents on one problem with the same number of evaluations each.

LeNet-5 on Fashion-MNIST (the reference checkpoint), 50 % MACs, AMC's ``acc`` reward: DDPG, TPE,
CMA-ES, random and the uniform baseline, several seeds each, every run through
``agents.search.run_search`` into ``OUT/<agent>-s<seed>``, then ``benchmarks.compare.compare_runs``
writes the table and the plots (``--compare-out``). A run that already finished is kept (rerun the
script after an interruption to complete the rest; ``--fresh`` starts every run again).

    python scripts/bench_agents.py --data-dir ../shared/datasets/fashion-mnist --evals 150

One evaluation prunes the model and measures val top-1 on ``--eval-limit`` held-out images (2,000:
about 0.2 s on one CPU thread), so ``--evals`` x runs x that is the budget.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks.harness import Experiment

ROOT = Path(__file__).resolve().parent.parent
AGENTS_DEFAULT = ("ddpg", "tpe", "cmaes", "random", "uniform")


def arguments(p) -> None:
    p.add_argument("--data-dir", required=True, help="folder of the Fashion-MNIST IDX .gz files (e.g. ../shared/datasets/fashion-mnist)")
    p.add_argument("--checkpoint", default=str(ROOT / "reference" / "lenet5-fashion-mnist.pt"),
                   help="trained LeNet-5 (amc train --model lenet5 --dataset fashion-mnist ...)")
    p.add_argument("--target", default="macs=0.5", help="budget (default macs=0.5)")
    p.add_argument("--agents", nargs="+", default=list(AGENTS_DEFAULT), help="agents to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="search seeds")
    p.add_argument("--evals", type=int, default=150, help="evaluations (episodes / trials) per run")
    p.add_argument("--warmup", type=int, default=50, help="DDPG random warm-up episodes")
    p.add_argument("--eval-limit", type=int, default=2000, help="val images per evaluation (of the 5,000 held out)")
    p.add_argument("--nsga2", action="store_true", help="also one NSGA-II run without a budget (macs=1.0), "
                   "population evals/5, for the Pareto plot")
    p.add_argument("--compare-out", default="bench_out/compare", help="the comparison goes here")
    p.add_argument("--fresh", action="store_true", help="discard finished runs and start every run again")


def _finished(run_dir: Path, evals: int) -> bool:
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    if s.get("interrupted"):
        return False
    if s.get("converged") is not None:  # uniform / presets: one bisection
        return True
    return int((s.get("study") or {}).get("n_complete", s.get("episodes")) or 0) >= evals


def body(args) -> dict:
    from agents import SearchConfig, run_search
    from benchmarks.compare import compare_runs

    out = args.out
    plan: list[tuple[str, int, dict]] = [(a, s, {}) for a in args.agents for s in args.seeds]
    if args.nsga2:
        plan.append(("nsga2", args.seeds[0], {"target": "macs=1.0",
                                              "agent_kwargs": {"population_size": max(4, args.evals // 5)}}))
    run_dirs = []
    t_all = time.monotonic()
    for agent, seed, extra in plan:
        run_dir = out / f"{agent}-s{seed}"
        run_dirs.append(run_dir)
        if not args.fresh and _finished(run_dir, args.evals):
            print(f"{run_dir}: finished earlier, kept", flush=True)
            continue
        cfg = SearchConfig(**{
            "checkpoint": args.checkpoint, "dataset": "fashion-mnist", "data_dir": args.data_dir,
            "target": args.target, "reward": "acc", "agent": agent, "seed": seed, "episodes": args.evals,
            "warmup": args.warmup, "env_kwargs": {"eval_limit": args.eval_limit}, "device": "cpu",
            "threads": args.threads, "run_dir": str(run_dir), "overwrite": True, "checkpoint_every": 25, **extra})
        t0 = time.monotonic()
        s = run_search(cfg)
        print(f"{run_dir}: best val top-1 {s['best_accuracy']:.2f}% at {s['achieved'].get('macs_ratio', float('nan')):.3f}"
              f" MACs, {s.get('evaluations', s['episodes'])} evaluations, {time.monotonic() - t0:.0f} s", flush=True)
    result = compare_runs(run_dirs, out_dir=args.compare_out, test=True)  # + each best policy's test top-1
    print()
    print(Path(result["markdown"]).read_text(), end="")
    print(f"\nbenchmark: {time.monotonic() - t_all:.0f} s; report in {args.compare_out}")
    return {"config": vars(args), "runs": [str(d) for d in run_dirs], "compare": result}


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/agents", result="bench_agents.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
