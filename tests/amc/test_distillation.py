"""Hinton KD loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from amc.distillation import DistillationLoss, kd_loss
from amc.errors import AmcError


def test_kd_loss_hand_value() -> None:
    # s = [1, 0], t = [0, 1], y = 0, T = 2, alpha = 0.5
    # p_t = softmax([0, .5]), p_s = softmax([.5, 0]); KL(p_t || p_s) = (p_t1 - p_t0) * 0.5
    p_t1 = 1.0 / (1.0 + math.exp(-0.5))
    kl = (p_t1 - (1.0 - p_t1)) * 0.5  # 0.1224593
    ce = math.log(1.0 + math.exp(-1.0))  # 0.3132617
    expected = 0.5 * 4.0 * kl + 0.5 * ce
    assert expected == pytest.approx(0.4015494, abs=1e-6)
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    got = kd_loss(s, t, y, temperature=2.0, alpha=0.5)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    assert float(DistillationLoss(temperature=2.0, alpha=0.5)(s, t, y)) == pytest.approx(expected, abs=1e-6)


def test_kd_loss_limits_and_batch_mean() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.randint(0, 4, (5,), generator=g)
    assert float(kd_loss(s, t, y, temperature=3.0, alpha=0.0)) == pytest.approx(float(F.cross_entropy(s, y)))
    assert float(kd_loss(s, s, None, temperature=3.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    # the KD term is a per-sample mean: duplicating the batch does not change it
    a = kd_loss(s, t, None, temperature=3.0, alpha=1.0)
    b = kd_loss(torch.cat([s, s]), torch.cat([t, t]), None, temperature=3.0, alpha=1.0)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    # gradients reach the student only
    s2, t2 = s.clone().requires_grad_(), t.clone().requires_grad_()
    kd_loss(s2, t2, y, temperature=3.0, alpha=0.7).backward()
    assert s2.grad is not None and t2.grad is None


def test_kd_loss_rejects_bad_arguments() -> None:
    s = torch.zeros(2, 3)
    with pytest.raises(AmcError, match="temperature"):
        kd_loss(s, s, None, temperature=0.0, alpha=1.0)
    with pytest.raises(AmcError, match="alpha"):
        kd_loss(s, s, None, temperature=1.0, alpha=1.5)
    with pytest.raises(AmcError, match="targets"):
        kd_loss(s, s, None, temperature=1.0, alpha=0.5)
    with pytest.raises(AmcError, match="same classes"):
        kd_loss(s, torch.zeros(2, 4), None, temperature=1.0, alpha=1.0)
