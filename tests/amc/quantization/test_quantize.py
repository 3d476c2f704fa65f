"""Tests of amc.quantization.quantize: quantize_model, calibration on the float model, HAQ's rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.quantization import (
    QuantCache,
    QuantConfig,
    QuantWrapper,
    activation_scale,
    calibrate,
    first_last_layers,
    pin_first_last,
    quantize_model,
    quantized_layers,
)
from tests.amc.quantization._models import LAYERS, TinyCNN, accuracy


@pytest.mark.parametrize("bad", [0, 9, 16, -1, 3.5, "4", True])
def test_bad_bits_name_layer_and_value(bad) -> None:
    m = TinyCNN()
    with pytest.raises(AmcError, match=r"conv2.*" + str(bad).replace(".", r"\.")):
        quantize_model(m, {"conv2": bad})
    with pytest.raises(AmcError, match="conv2"):
        quantize_model(m, {}, {"conv2": bad}, calibration=TinyCNN.example_inputs())


def test_float_bits_and_unknown_names() -> None:
    m = TinyCNN()
    q = quantize_model(m, {"conv1": None, "conv2": 32, "fc": 8})
    assert list(quantized_layers(q)) == ["fc"]
    with pytest.raises(AmcError, match="quantizable Conv2d/Linear layers are: .*conv1"):
        quantize_model(m, {"bn1": 8})
    with pytest.raises(AmcError, match="nope"):
        quantize_model(m, {"nope": 8})


def test_binary_ternary_need_their_bits() -> None:
    m = TinyCNN()
    with pytest.raises(AmcError, match="binary.*1 bit.*w_bits is 4"):
        quantize_model(m, {"conv2": 4}, config=QuantConfig(weight_scheme="binary"))
    q = quantize_model(m, {"conv1": 8, "conv2": 1, "fc": 8}, config=QuantConfig(weight_scheme="binary"),
                       schemes={"conv1": "linear", "fc": "linear"})
    assert q.conv2.scheme == "binary" and q.conv1.scheme == "linear"


def test_eight_bit_keeps_accuracy(trained, digits_xy) -> None:
    _, _, xte, yte = digits_xy
    base = accuracy(trained, xte, yte)
    assert base > 90
    first, last = first_last_layers(trained, xte[:1])
    assert (first, last) == ("conv1", "fc")
    w, a = pin_first_last({n: 8 for n in LAYERS}, {n: 8 for n in LAYERS}, first, last)
    assert a["conv1"] is None
    q = quantize_model(trained, w, a, calibration=[xte[:256]])
    assert abs(accuracy(q, xte, yte) - base) <= 0.5
    assert q.conv2.act_signed is False and q.fc.act_signed is False  # inputs after ReLU: unsigned
    assert isinstance(trained.conv1, nn.Conv2d)  # input model untouched
    q4 = quantize_model(trained, {n: 4 for n in LAYERS}, {"conv2": 4, "fc": 4}, calibration=xte[:256])
    assert accuracy(q4, xte, yte) > base - 15


def test_two_bit_kl_survives_spiky_histograms(trained, digits_xy) -> None:
    # digits have 17 grey levels and 2-bit conv1 weights make conv2's input take few distinct
    # values; a KL search on 2048 fine bins once clipped it at 0.2% of its range (chance accuracy)
    _, _, xte, yte = digits_xy
    q = quantize_model(trained, {n: 2 for n in LAYERS}, {"conv2": 2, "fc": 2}, calibration=xte[:256])
    with torch.no_grad():
        a = torch.relu(q.bn1(q.conv1(xte[:256])))
    assert a.unique().numel() < 0.2 * a.numel()  # spiky indeed
    scale, signed = activation_scale(a, 2, method="kl")
    assert not signed and scale * 3 > 0.2 * float(a.max())
    assert q.conv2.act_scale * 3 > 0.2 * float(a.max())
    assert accuracy(q, xte, yte) > 85


def test_calibration_observes_the_float_model(trained, digits_xy) -> None:
    """Activation ranges come from the float model (HAQ's calibrate, PyTorch PTQ): a layer's range
    does not depend on the bits of the layers before it."""
    _, _, xte, _ = digits_xy
    a = {"conv2": 3, "fc": 4}
    ranges = []
    for w in ({"conv1": 2, "conv2": 2, "fc": 2}, {"conv1": 8}, {}):
        q = quantize_model(trained, w, a, calibration=xte[:256])
        ranges.append([(q.get_submodule(n).act_scale, q.get_submodule(n).act_signed) for n in a])
    assert ranges[0] == ranges[1] == ranges[2]
    with torch.no_grad():
        x2 = torch.relu(trained.bn1(trained.conv1(xte[:256])))  # conv2's float input
    assert ranges[0][0] == activation_scale(x2, 3)
    # calibrate() on its own does the same, and restores the mode
    q = quantize_model(trained, {"conv1": 2}, a, calibration=xte[:256]).train()
    q.conv2.act_scale = None
    calibrate(q, [xte[:256]])
    assert q.training and (q.conv2.act_scale, q.conv2.act_signed) == ranges[0][0]


def test_signed_input_detected(trained, digits_xy) -> None:
    _, _, xte, _ = digits_xy
    q = quantize_model(trained, {}, {"conv1": 8}, calibration=xte[:64])
    assert q.conv1.act_signed is True and q.conv1.w_bits is None


def test_calibration_required_and_inplace() -> None:
    m = TinyCNN()
    with pytest.raises(AmcError, match="calibration"):
        quantize_model(m, {"conv2": 8}, {"conv2": 8})
    with pytest.raises(AmcError, match="calibration data must be"):
        quantize_model(m, {}, {"conv2": 8}, calibration=["not a tensor"])
    q = quantize_model(m, {"conv2": 8}, inplace=True)
    assert q is m and isinstance(m.conv2, QuantWrapper)
    back = quantize_model(q, {"conv2": None})  # a float choice unwraps the layer
    assert isinstance(back.conv2, nn.Conv2d) and isinstance(q.conv2, QuantWrapper)


def test_result_is_a_deep_copy() -> None:
    """Without ``inplace`` the result shares nothing with the input; ties and shared submodules
    stay tied and shared, and hooks come along (with or without a cache)."""
    m = TinyCNN()
    m.head = m.fc  # a shared submodule
    m.tied = nn.Linear(2 * 16 * 4 * 4, 10)
    m.tied.weight = m.fc.weight  # a tied parameter
    m.notes = {"k": [1, 2]}
    calls = []
    m.conv1.register_forward_hook(lambda mod, i, o: calls.append(1))
    x = TinyCNN.example_inputs(3)
    for cache in (None, QuantCache()):
        calls.clear()
        c = quantize_model(m, {}, cache=cache)
        assert c.head is c.fc and c.tied.weight is c.fc.weight and c.fc is not m.fc
        assert c.notes == m.notes and c.notes["k"] is not m.notes["k"]
        for (k1, v1), (k2, v2) in zip(m.state_dict().items(), c.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2) and v1.data_ptr() != v2.data_ptr()
        with torch.no_grad():
            assert torch.equal(c(x), m(x))
            c.conv2.weight.zero_()
            assert not torch.equal(c(x), m(x))
        assert len(calls) == 4  # the hook was copied too
        assert c.bn1.running_mean is not m.bn1.running_mean
        assert isinstance(c.fc.weight, nn.Parameter) and c.fc.weight.requires_grad
