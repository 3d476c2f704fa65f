#!/usr/bin/env bash
# The quickstart search (digits, LeNet-5, 50% MACs; ~2 minutes on a laptop CPU).
# Extra options are passed on, e.g.  scripts/search_quickstart.sh --episodes 100 --resume
set -euo pipefail
cd "$(dirname "$0")/.."
exec amc search --config configs/quickstart.yaml "$@"
