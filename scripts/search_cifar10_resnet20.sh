#!/usr/bin/env bash
# AMC search for ResNet-20 on CIFAR-10 at 50% MACs.
#   scripts/search_cifar10_resnet20.sh --data-dir data --checkpoint reference/resnet20-cifar10-kd-resnet56.pt
# Ctrl-C saves a checkpoint; rerun with --resume to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
exec amc search --config configs/cifar10_resnet20.yaml "$@"
