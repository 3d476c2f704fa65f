"""Tests of amc.quantization.schemes: the scheme registry, encode/decode, bit checks, weight error."""

from __future__ import annotations

import pytest
import torch

from amc.errors import AmcError
from amc.quantization import QuantConfig, quantize_model
from amc.quantization.schemes import (
    QuantizedWeight,
    check_bits,
    get_scheme,
    quantize_weight,
    quantize_weight_codes,
    register_scheme,
    scheme_names,
    weight_quantization_error,
)
from tests.amc.quantization._models import TinyCNN

W = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(7))  # (C, ...) a conv weight


def _bits_of(name: str) -> list[int]:
    fixed = get_scheme(name).fixed_bits
    return [fixed] if fixed is not None else list(range(1, 9))


def _levels(qw: QuantizedWeight, n_codes: int) -> torch.Tensor:
    """(C, n) every value each channel's codes can take: decode every code of every channel."""
    codes = torch.arange(n_codes, dtype=torch.uint8).expand(qw.codes.shape[0], n_codes)
    return QuantizedWeight(codes, qw.scale, qw.bits, qw.scheme, qw.centroids).dequantize()


@pytest.mark.parametrize("clip", ["max", "mse"])
@pytest.mark.parametrize("name", scheme_names())
def test_every_scheme_round_trips_within_its_step(name, clip) -> None:
    """decode(encode(w)) is one of the two levels around w (the extreme level outside their range),
    so it is within one step of w: the contract every registered scheme meets."""
    sch = get_scheme(name)
    flat = W.reshape(8, -1)  # (C, K)
    for bits in _bits_of(name):
        qw = sch.encode(W, bits, per_channel=True, clip=clip)
        used = get_scheme(qw.scheme)  # linear stores 1 bit as binary
        n = used.num_codes(bits)
        assert qw.codes.shape == W.shape and qw.codes.dtype == torch.uint8 and int(qw.codes.max()) < n
        deq = sch.decode(qw, torch.float32) if used is sch else qw.dequantize()
        assert deq.shape == W.shape
        lv = _levels(qw, n)  # (C, n)
        if lv.shape[0] != flat.shape[0]:  # one codebook for the layer (k-means)
            lv = lv[:1].expand(flat.shape[0], n)
        inf = torch.tensor(float("inf"))
        x = flat[:, :, None]  # (C, K, 1)
        below = torch.where(lv[:, None, :] <= x, lv[:, None, :], -inf).amax(-1)  # (C, K)
        above = torch.where(lv[:, None, :] >= x, lv[:, None, :], inf).amin(-1)
        below = torch.where(torch.isinf(below), lv.amin(1, keepdim=True).expand_as(below), below)
        above = torch.where(torch.isinf(above), lv.amax(1, keepdim=True).expand_as(above), above)
        got = deq.reshape(8, -1)
        assert torch.all((got == below) | (got == above)), (name, bits)
        step = (lv.sort(1).values.diff(dim=1).amax(1, keepdim=True))  # (C, 1) the widest gap
        inside = (flat >= lv.amin(1, keepdim=True)) & (flat <= lv.amax(1, keepdim=True))
        assert torch.all(((flat - got).abs() <= step + 1e-6) | ~inside), (name, bits)
        if used is sch:  # decode is what the QuantizedWeight dequantizes to
            assert torch.equal(qw.dequantize(), deq)


def test_unknown_scheme_is_a_clear_error() -> None:
    for call in (lambda: get_scheme("log"), lambda: QuantConfig(weight_scheme="log"),
                 lambda: quantize_weight_codes(W, 4, scheme="log"),
                 lambda: quantize_model(TinyCNN(), {"conv1": 4}, schemes={"conv1": "log"})):
        with pytest.raises(AmcError, match=r"unknown weight scheme 'log'; valid: linear, binary, ternary, kmeans"):
            call()
    assert get_scheme("KMeans").name == "kmeans"  # names are case-insensitive
    with pytest.raises(ValueError, match="already registered"):
        register_scheme(get_scheme("linear"))


def test_bits_checks() -> None:
    assert check_bits(None) is None and check_bits(32) is None and check_bits(8) == 8 and check_bits(1) == 1
    assert check_bits(4.0) == 4
    for bad in (0, 9, 3.5, "4", True):
        with pytest.raises(AmcError, match="bits"):
            check_bits(bad, layer="x")
    with pytest.raises(AmcError, match=r"ternary.*2 bit.*w_bits is 3"):
        quantize_weight_codes(W, 3, scheme="ternary")
    with pytest.raises(AmcError, match="needs bits in 1..8"):
        quantize_weight_codes(W, None)


@pytest.mark.parametrize("scheme,per_channel", [("linear", True), ("linear", False), ("kmeans", False)])
def test_weight_error_falls_with_bits(scheme, per_channel) -> None:
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(1))
    errs = [weight_quantization_error(w, b, scheme=scheme, per_channel=per_channel) for b in range(1, 9)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3 and errs[0] < 0.5


def test_distinct_values_per_scheme() -> None:
    w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(4))
    assert quantize_weight(w, 1, scheme="binary", per_channel=False).unique().numel() == 2
    assert quantize_weight(w, 2, scheme="ternary", per_channel=False).unique().numel() == 3
    for b in (1, 2, 3, 4):
        assert quantize_weight(w, b, scheme="kmeans").unique().numel() == 2**b
    for b in (2, 3, 4, 8):
        assert quantize_weight(w, b, per_channel=False, clip="max").unique().numel() <= 2**b - 1
    per_ch = quantize_weight(w, 1, scheme="binary", per_channel=True)
    assert all(per_ch[c].unique().numel() == 2 for c in range(16))
    tern = quantize_weight_codes(w, 2, scheme="ternary")
    a = w.abs().reshape(16, -1)
    assert torch.equal(tern.codes.reshape(16, -1) == 1, a <= 0.7 * a.mean(1, keepdim=True))  # TWN threshold
    assert quantize_weight(w, None) is w and quantize_weight(w, 32) is w


def test_linear_codes_by_hand() -> None:
    """4-bit max-clip linear codes of a known row: scale max|w| / 7, round half to even."""
    w = torch.tensor([[0.7, -0.35, 0.05, 0.0]])
    qw = quantize_weight_codes(w, 4, clip="max")
    assert torch.allclose(qw.scale, torch.tensor([0.1]))
    assert qw.codes.tolist() == [[14, 3, 7, 7]]  # 7 + round(w / 0.1): 7, -3.5 -> -4, 0.5 -> 0, 0
    assert torch.allclose(qw.dequantize(), torch.tensor([[0.7, -0.4, 0.0, 0.0]]))


def test_straight_through_gradient() -> None:
    w = W.clone().requires_grad_()
    quantize_weight(w, 3).mul(2.0).sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, 2.0))
