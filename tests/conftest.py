"""Shared fixtures: keep this small (tiny data, tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amc.data import DatasetSplits, get_dataset


@pytest.fixture(scope="session")
def digits() -> DatasetSplits:
    """scikit-learn digits (1x8x8, 10 classes): train 1137 / val 300 / test 360, seed 0. Read-only."""
    return get_dataset("digits", seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and one thread keeps a shared 2-core machine from
    thrashing (OpenMP spin-waits under load cost far more than they save)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lenet_ckpt(tmp_path_factory, digits: DatasetSplits) -> Path:
    """LeNet-5 trained on digits (~90% val top-1, ~2 s); a checkpoint path. Read-only."""
    from amc.models import ModelSpec, build_model
    from amc.training import TrainConfig, train

    torch.manual_seed(0)
    spec = ModelSpec.for_data("lenet5", digits)
    run = tmp_path_factory.mktemp("lenet")
    train(build_model(spec), digits, TrainConfig(epochs=8, lr=0.05, batch_size=32, device="cpu", num_threads=1),
          run_dir=run, model_spec=spec)
    return run / "final.pt"
