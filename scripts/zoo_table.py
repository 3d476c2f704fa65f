#!/usr/bin/env python
"""Zoo check over the torchvision families: graph, random feasible policy, real prune, forward, and
MACs/params against ``FlopCounterMode``; prints (or writes) the markdown table for the README.

    python scripts/zoo_table.py --out docs/zoo_table.md            # every family (minutes on one core)
    python scripts/zoo_table.py --models resnext50_32x4d regnet_x_400mf

The checks live in ``amc.zoo``; exit status 1 when a CNN family fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amc.zoo import FAMILIES, check_model, entry, markdown_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", help="torchvision names from amc.zoo.FAMILIES (default: all)")
    p.add_argument("--target", type=float, default=0.5, help="MACs ratio of the random policy (default 0.5)")
    p.add_argument("--lbound", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the markdown table here too")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    entries = [entry(n) for n in args.models] if args.models else FAMILIES
    results = [check_model(e, target=args.target, lbound=args.lbound, seed=args.seed) for e in entries]
    table = markdown_table(results)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    failed = [r.name for r, e in zip(results, entries) if not r.ok and not e.unsupported]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
