"""Shared fixtures: keep this small (tiny data, tiny models)."""

from __future__ import annotations

import pytest

from amc.data import DatasetSplits, get_dataset


@pytest.fixture(scope="session")
def digits() -> DatasetSplits:
    """scikit-learn digits (1x8x8, 10 classes): train 1137 / val 300 / test 360, seed 0. Read-only."""
    return get_dataset("digits", seed=0)
