"""Where the tests find the repository's files (the tests live in folders that mirror the packages)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference"
LENET_DIGITS = REFERENCE / "lenet5-digits.pt"
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"  # ../shared beside the checkout, where it is
