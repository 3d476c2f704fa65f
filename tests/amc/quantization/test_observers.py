"""Tests of amc.quantization.observers: one-pass statistics and the calibration rules."""

from __future__ import annotations

import pytest
import torch

from amc.errors import AmcError
from amc.quantization import activation_quantization_error, activation_scale
from amc.quantization.observers import (
    ACT_CALIBRATIONS,
    ActObserver,
    get_calibration,
    percentile_threshold,
    scale_from_observer,
)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("method,first", [("mse", 1), ("auto", 1), ("max", 2), ("percentile", 2), ("kl", 1)])
def test_activation_error_falls_with_bits(relu, method, first) -> None:
    x = torch.randn(16, 8, 12, 12, generator=torch.Generator().manual_seed(2))
    if relu:
        x = torch.relu(x)
    last = 7 if method == "kl" else 8  # KL is not a squared-error criterion: it clips a bit tight at 8 bits
    errs = [activation_quantization_error(x, b, method=method) for b in range(first, last + 1)]
    assert all(a > b for a, b in zip(errs, errs[1:])), (method, errs)


def test_kl_beats_max_at_low_bits() -> None:
    x = torch.randn(64, 4096, generator=torch.Generator().manual_seed(3))
    for b in (3, 4):
        assert activation_quantization_error(x, b, method="kl") < activation_quantization_error(x, b, method="max")


def test_observer_statistics_match_numpy() -> None:
    """Statistics gathered batch by batch (the histogram range doubling as larger values arrive)
    equal those of the whole tensor at once."""
    g = torch.Generator().manual_seed(5)
    parts = [torch.randn(1000, generator=g) * s for s in (0.5, 2.0, 8.0)]  # growing ranges
    obs = ActObserver(bins=64, histogram=True, abs_mean=True)
    for p in parts:
        obs.observe(p)
    x = torch.cat(parts).double()
    assert obs.count == 3000 and obs.min == float(x.min()) and obs.max == float(x.max())
    assert obs.abs_mean == pytest.approx(float(x.abs().mean()), rel=1e-6)
    assert obs.hist_max >= float(x.abs().max()) and float(obs.hist.sum()) == 3000
    assert not obs.non_negative
    # the percentile rule on the histogram: at least 99 % of |x| below, within one bin
    t = percentile_threshold(obs.hist, obs.hist_max, 99.0)
    assert float((x.abs() <= t).double().mean()) >= 0.99
    assert float((x.abs() <= t - obs.bin_width()).double().mean()) < 0.99


def test_rules_by_hand() -> None:
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 6.0])  # >= 0: unsigned, 4 bits -> qmax 15
    assert activation_scale(x, 4, method="max") == (6.0 / 15, False)
    obs = ActObserver(histogram=False, abs_mean=True)
    obs.observe(torch.tensor([-1.0, 3.0]))
    assert scale_from_observer(obs, 1, "max") == (2.0, True)  # signed 1 bit: {-E|x|, +E|x|}
    assert scale_from_observer(obs, 8, "max") == (3.0 / 127, True)


def test_calibration_registry() -> None:
    assert ACT_CALIBRATIONS == ("auto", "max", "percentile", "kl", "mse")
    assert [get_calibration(n).histogram for n in ACT_CALIBRATIONS[1:]] == [False, True, True, True]
    with pytest.raises(AmcError, match="unknown activation calibration 'entropy'; valid: max, percentile, kl, mse"):
        get_calibration("entropy")
    with pytest.raises(AmcError, match="valid: auto, max, percentile, kl, mse"):
        activation_scale(torch.ones(4), 4, method="entropy")
