"""``amc compare``: compare search runs (agents, seeds, budgets): a table and plots.

Examples::

    amc compare runs/ddpg runs/tpe runs/uniform              # -> runs/compare/
    amc compare bench_out/agents --out bench_out/compare     # every run dir under bench_out/agents
    amc compare runs/nsga2 runs/ddpg-s* --out runs/cmp       # Pareto front with the DDPG results marked
    amc compare runs/ddpg-s* runs/tpe-s* --test              # + test top-1 of each best policy

Writes ``compare.md`` and ``compare.json`` (mean ± std when several runs share agent and budget,
e.g. three seeds), ``curves.png`` (best-so-far accuracy vs evaluations), ``pareto.png`` (with a
multi-objective run), ``policies.png`` (best policy per agent) and TensorBoard events in ``OUT/tb``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("Examples::", 1)[1].split("Writes", 1)[0].rstrip() if __doc__ else None
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="search run directories (or a directory holding several)")
    p.add_argument("--out", metavar="DIR",
                   help="where the report goes (default: COMMON_PARENT/compare of the run directories)")
    p.add_argument("--test", action="store_true",
                   help="also measure each best policy's top-1 on the test split (loads the runs' data and models)")
    p.add_argument("--device", default="cpu", help="device for --test (default cpu)")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")


def run(args: argparse.Namespace) -> int:
    from benchmarks.compare import compare_runs

    parents = [str(Path(r).resolve().parent) for r in args.runs]
    out = Path(args.out) if args.out else Path(os.path.commonpath(parents)) / "compare"
    result = compare_runs(args.runs, out_dir=out, tensorboard=not args.no_tensorboard, test=args.test,
                          device=args.device)
    print(Path(result["markdown"]).read_text(), end="")
    print(f"\nwritten: {result['markdown']}, {out / 'compare.json'}"
          + "".join(f", {p}" for p in result["figures"].values()))
    if not args.no_tensorboard:
        print(f"tensorboard --logdir {out}")
    return 0
