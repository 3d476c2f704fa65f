#!/usr/bin/env bash
# AMC search for LeNet-5 on Fashion-MNIST at 50% MACs.
#   scripts/search_fashion.sh --data-dir /path/to/fashion-mnist [--checkpoint runs/lenet5-fashion/final.pt]
# Ctrl-C saves a checkpoint; rerun with --resume to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
exec amc search --config configs/fashion_lenet5.yaml "$@"
