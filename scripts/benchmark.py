#!/usr/bin/env python
"""The benchmark suite, as ``amc bench`` (see ``amc bench --help`` and :mod:`benchmarks.suite`).

    python scripts/benchmark.py --checkpoint reference/resnet20-cifar10-kd-resnet56.pt --dataset cifar10 \
        --data-dir data --quick --out bench_out/r20-quick
"""

from __future__ import annotations

import sys

from amc.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
