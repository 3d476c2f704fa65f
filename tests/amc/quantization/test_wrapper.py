"""Tests of amc.quantization.wrapper: the quantized layer, its weight cache, QAT."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.quantization import QuantWrapper, quantize_model
from amc.quantization.schemes import LinearScheme, QuantizedWeight
from amc.quantization.wrapper import quantizable_layers, quantized_layers
from amc.utils import eval_mode
from tests.amc.quantization._models import LAYERS, TinyCNN


def test_wrapper_needs_calibration_and_a_layer() -> None:
    wrapper = QuantWrapper(nn.Linear(4, 2), 8, 8, name="head")
    with pytest.raises(AmcError, match="head.*never calibrated"):
        wrapper(torch.randn(3, 4))
    with pytest.raises(AmcError, match="only nn.Conv2d and nn.Linear"):
        QuantWrapper(nn.BatchNorm2d(3), 8)
    with pytest.raises(AmcError, match="must be positive"):
        wrapper.set_activation_range(0.0, True)


def test_wrapper_computes_the_quantized_layer() -> None:
    """The forward is the layer's own with the dequantized weight and the fake-quantized input."""
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    w = QuantWrapper(conv, 4, 8, name="c")
    w.set_activation_range(0.05, True)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    ref = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    ref.load_state_dict({"weight": w.quantized_weight().dequantize(), "bias": conv.bias.detach()})
    xq = (x / 0.05).round().clamp(-127, 127) * 0.05
    with torch.no_grad():
        assert torch.allclose(w(x), ref(xq), atol=1e-6)
    assert "w_bits=4 (linear), a_bits=8s" in repr(w)


def test_weight_cache_reused_in_eval_and_refreshed_on_change(monkeypatch) -> None:
    q = quantize_model(TinyCNN().eval(), {n: 4 for n in LAYERS})
    calls = {"n": 0}
    orig = LinearScheme.encode

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(LinearScheme, "encode", counting)
    x = TinyCNN.example_inputs(4)
    with torch.no_grad():
        y1 = q(x)
        q(x)
    assert calls["n"] == 0  # quantized once, inside quantize_model
    with torch.no_grad():
        q.conv2.module.weight.mul_(2.0)
        y2 = q(x)
    assert calls["n"] == 1 and not torch.allclose(y1, y2)


def test_pinned_codes_survive_a_copy_until_the_weight_changes() -> None:
    w = QuantWrapper(nn.Linear(6, 3), 3, name="fc", scheme="kmeans")
    codes = torch.randint(0, 8, (3, 6), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    qw = QuantizedWeight(codes, None, 3, "kmeans", torch.linspace(-1, 1, 8))
    w.pin_quantized_weight(qw)
    assert w.pinned and torch.equal(w.module.weight, qw.dequantize())
    c = copy.deepcopy(w)
    assert c.pinned and c.quantized_weight() is not None and torch.equal(c.quantized_weight().codes, codes)
    with torch.no_grad():
        c.module.weight.add_(0.01)
    c.quantized_weight()
    assert not c.pinned  # re-quantized from the changed float weight
    w.clear_cache()
    assert not w.pinned


def test_extra_state_round_trip() -> None:
    a = QuantWrapper(nn.Linear(4, 2), 2, 6, name="a", scheme="ternary")
    a.set_activation_range(0.25, False)
    b = QuantWrapper(nn.Linear(4, 2), 8, None, name="b")
    b.load_state_dict(a.state_dict())
    assert (b.w_bits, b.a_bits, b.scheme, b.act_scale, b.act_signed) == (2, 6, "ternary", 0.25, False)


def test_layer_listing_and_eval_mode() -> None:
    q = quantize_model(TinyCNN(), {"conv2": 4})
    assert list(quantized_layers(q)) == ["conv2"]
    assert sorted(quantizable_layers(q)) == ["conv1", "conv2", "fc"]  # not conv2.module
    q.train()
    q.bn1.eval()
    with eval_mode(q):
        assert not any(m.training for m in q.modules())
    assert q.training and not q.bn1.training and q.bn2.training


def test_qat_lowers_loss(digits_xy) -> None:
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits_xy
    q = quantize_model(TinyCNN(), {n: 4 for n in LAYERS}, {"conv2": 4, "fc": 4}, calibration=xtr[:128])
    q.train()
    opt = torch.optim.SGD(q.parameters(), lr=0.1, momentum=0.9)
    x, y = xtr[:256], ytr[:256]
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(q(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert q.conv2.module.weight.grad is not None and q.conv2.module.weight.grad.abs().sum() > 0
    assert losses[-1] < 0.7 * losses[0], losses
