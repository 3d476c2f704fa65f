"""Tests of amc.quantization.cache: a model built through QuantCache equals one built without."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.quantization import (
    QuantCache,
    QuantConfig,
    load_packed,
    quantize_model,
    quantized_layers,
    save_packed,
)
from amc.quantization.cache import ModelFingerprint, digest
from tests.amc.quantization._models import TinyCNN

BIT_CASES = [
    ({"conv1": 8, "conv2": 3, "fc": 2}, {"conv2": 4, "fc": 6}),
    ({"conv1": 8, "conv2": 2, "fc": 8}, {"conv2": 2, "fc": 8}),
    ({"conv2": 4}, {"conv1": 8, "fc": 1}),
    ({"conv1": 5, "fc": 3}, {}),
]


@pytest.mark.parametrize("scheme", ["linear", "kmeans"])
def test_cache_builds_the_same_model(trained, digits_xy, scheme) -> None:
    _, _, xte, _ = digits_xy
    cfg = QuantConfig(weight_scheme=scheme, act_calibration="auto" if scheme == "linear" else "mse")
    cal = [xte[:128], xte[128:256]]
    cache = QuantCache()
    for rnd in range(2):  # misses first, then hits
        for w, a in BIT_CASES:
            ref = quantize_model(trained, w, a, calibration=cal, config=cfg)
            got = quantize_model(trained, w, a, calibration=cal, config=cfg, cache=cache)
            with torch.no_grad():
                assert torch.equal(got(xte), ref(xte)), (rnd, w, a)
            for n, m in quantized_layers(ref).items():
                g = got.get_submodule(n)
                assert (g.w_bits, g.a_bits, g.act_scale, g.act_signed) == (m.w_bits, m.a_bits, m.act_scale, m.act_signed)
                if m.w_bits is not None:
                    assert torch.equal(g.quantized_weight().codes, m.quantized_weight().codes)
            assert isinstance(trained.conv1, nn.Conv2d)  # input model untouched
        if rnd == 0:
            misses = dict(cache.misses)
    assert cache.misses == misses  # the second round was all hits
    assert cache.hits["weights"] >= 8 and cache.hits["stats"] >= 3 and cache.info()["models"] == 1


def test_cache_sees_changed_weights_and_data(trained, digits_xy) -> None:
    _, _, xte, _ = digits_xy
    m = copy.deepcopy(trained)
    w, a = {"conv1": 8, "conv2": 3, "fc": 2}, {"conv2": 4, "fc": 4}
    cache = QuantCache()
    first = quantize_model(m, w, a, calibration=xte[:256], cache=cache)
    with torch.no_grad():
        m.conv1.weight.mul_(1.5)  # upstream of conv2: its input statistics change too
    for cal in (xte[:256], xte[256:512]):
        ref = quantize_model(m, w, a, calibration=cal)
        got = quantize_model(m, w, a, calibration=cal, cache=cache)
        with torch.no_grad():
            assert torch.equal(got(xte), ref(xte))
        assert got.conv2.act_scale == ref.conv2.act_scale
    assert got.conv2.act_scale != first.conv2.act_scale
    assert cache.hits["stats"] == 0 and cache.info()["models"] == 3


def test_cache_keeps_loaded_codes(tmp_path, trained, digits_xy) -> None:
    _, _, xte, _ = digits_xy
    q = quantize_model(trained, {"conv1": 8, "conv2": 3, "fc": 2}, {"conv2": 4}, config=QuantConfig(weight_scheme="kmeans"),
                       calibration=xte[:128])
    save_packed(q, tmp_path / "q.amc")
    loaded = load_packed(tmp_path / "q.amc")
    cache = QuantCache()
    for _ in range(2):  # re-quantize only the activations; the loaded codes stay, with and without a cache
        ref = quantize_model(loaded, {}, {"fc": 6}, calibration=xte[:128])
        got = quantize_model(loaded, {}, {"fc": 6}, calibration=xte[:128], cache=cache)
        with torch.no_grad():
            assert torch.equal(got(xte), ref(xte))
        assert torch.equal(got.conv2.quantized_weight().codes, q.conv2.quantized_weight().codes)
    assert cache.info()["weights"] == 0


def test_cache_limits() -> None:
    cache = QuantCache(max_weight_bytes=40_000, max_models=1)
    m = TinyCNN().eval()
    for bits in range(2, 9):
        quantize_model(m, {"conv2": bits}, {"conv2": 8}, calibration=TinyCNN.example_inputs(8), cache=cache)
        quantize_model(m, {}, {"fc": 8}, calibration=TinyCNN.example_inputs(4), cache=cache)
    info = cache.info()
    assert 0 < info["weight_bytes"] <= 40_000 and info["weights"] < 7 and info["models"] == 1
    with pytest.raises(AmcError):
        QuantCache(max_models=0)
    cache.clear()
    assert cache.info()["weights"] == cache.info()["models"] == cache.info()["weight_bytes"] == 0


def test_fingerprint_sees_the_float_model_through_wrappers() -> None:
    """A wrapped model hashes as the float model it wraps; any changed byte or layer option changes it."""
    m = TinyCNN().eval()
    fp = ModelFingerprint(m)
    q = quantize_model(m, {"conv2": 4, "fc": 2})
    fq = ModelFingerprint(q)
    assert fq.model == fp.model and fq.tensors == fp.tensors and fq.weight("conv2") == digest(m.conv2.weight)
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        m2.bn2.running_var[0] += 1e-6
    assert ModelFingerprint(m2).model != fp.model
    m3 = copy.deepcopy(m)
    m3.conv1.stride = (2, 2)  # same tensors, another architecture
    assert ModelFingerprint(m3).model != fp.model
    assert digest(torch.zeros(3)) != digest(torch.zeros(3, dtype=torch.float64))
