"""Fixtures of the quantization tests: sklearn digits as tensors and a TinyCNN trained on them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tests.amc.quantization._models import TinyCNN


@pytest.fixture(scope="session")
def digits_xy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: 1100 / 697 normalised 1x8x8 digits, seed 0."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = (x - 0.3) / 0.4
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1100], y[:1100], x[1100:], y[1100:]


@pytest.fixture(scope="session")
def trained(digits_xy) -> TinyCNN:
    """TinyCNN trained 12 epochs with Adam (> 90% test top-1). Read-only."""
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits_xy
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(12):
        for i in range(0, len(ytr), 100):
            loss = nn.functional.cross_entropy(model(xtr[i:i + 100]), ytr[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
