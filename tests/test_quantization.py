"""Tests of amc.quantization: bit validation, error vs bits, schemes, calibration, QAT, packing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from amc._quant_pack import huffman_code_lengths, pack_bits, unpack_bits
from amc.errors import AmcError
from amc.quantization import (
    QuantCache,
    QuantConfig,
    QuantWrapper,
    _copy_model,
    activation_quantization_error,
    activation_scale,
    calibrate,
    check_bits,
    first_last_layers,
    huffman_size_bits,
    load_packed,
    pin_first_last,
    quantize_model,
    quantize_weight,
    quantize_weight_codes,
    quantized_layers,
    save_packed,
    weight_quantization_error,
    weight_storage_bits,
)


class TinyCNN(nn.Module):
    """8x8 single-channel inputs (sklearn digits). ``fc`` is defined first but runs last."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * width * 4 * 4, 10)
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))

    @staticmethod
    def example_inputs(batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 160)
        self.fc2 = nn.Linear(160, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


LAYERS = ["conv1", "conv2", "fc"]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = (x - 0.3) / 0.4
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1100], y[:1100], x[1100:], y[1100:]


@pytest.fixture(scope="module")
def trained(digits) -> TinyCNN:
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(12):
        for i in range(0, len(ytr), 100):
            loss = nn.functional.cross_entropy(model(xtr[i:i + 100]), ytr[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()) * 100


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 9, 16, -1, 3.5, "4", True])
def test_bad_bits_name_layer_and_value(bad) -> None:
    m = TinyCNN()
    with pytest.raises(AmcError, match=r"conv2.*" + str(bad).replace(".", r"\.")):
        quantize_model(m, {"conv2": bad})
    with pytest.raises(AmcError, match="conv2"):
        quantize_model(m, {}, {"conv2": bad}, calibration=TinyCNN.example_inputs())


def test_float_bits_and_unknown_names() -> None:
    assert check_bits(None) is None and check_bits(32) is None and check_bits(8) == 8 and check_bits(1) == 1
    m = TinyCNN()
    q = quantize_model(m, {"conv1": None, "conv2": 32, "fc": 8})
    assert list(quantized_layers(q)) == ["fc"]
    with pytest.raises(AmcError, match="quantizable Conv2d/Linear layers are: .*conv1"):
        quantize_model(m, {"bn1": 8})
    with pytest.raises(AmcError, match="nope"):
        quantize_model(m, {"nope": 8})


def test_config_validation() -> None:
    with pytest.raises(AmcError, match="valid: linear, binary, ternary, kmeans"):
        QuantConfig(weight_scheme="log")
    with pytest.raises(AmcError, match="valid: auto, max, percentile, kl"):
        QuantConfig(act_calibration="entropy")
    with pytest.raises(AmcError, match="percentile"):
        QuantConfig(percentile=0)
    assert QuantConfig().act_method(4) == "kl" and QuantConfig().act_method(5) == "max"
    assert QuantConfig.from_dict(QuantConfig(weight_scheme="kmeans").to_dict()).weight_scheme == "kmeans"


def test_binary_ternary_need_their_bits() -> None:
    m = TinyCNN()
    with pytest.raises(AmcError, match="binary.*1 bit.*w_bits is 4"):
        quantize_model(m, {"conv2": 4}, config=QuantConfig(weight_scheme="binary"))
    q = quantize_model(m, {"conv1": 8, "conv2": 1, "fc": 8}, config=QuantConfig(weight_scheme="binary"),
                       schemes={"conv1": "linear", "fc": "linear"})
    assert q.conv2.scheme == "binary" and q.conv1.scheme == "linear"


# -- error vs bits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme,per_channel", [("linear", True), ("linear", False), ("kmeans", False)])
def test_weight_error_falls_with_bits(scheme, per_channel) -> None:
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(1))
    errs = [weight_quantization_error(w, b, scheme=scheme, per_channel=per_channel) for b in range(1, 9)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3 and errs[0] < 0.5


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


def test_eight_bit_keeps_accuracy(trained, digits) -> None:
    _, _, xte, yte = digits
    base = _acc(trained, xte, yte)
    assert base > 90
    first, last = first_last_layers(trained, xte[:1])
    assert (first, last) == ("conv1", "fc")
    w, a = pin_first_last({n: 8 for n in LAYERS}, {n: 8 for n in LAYERS}, first, last)
    assert a["conv1"] is None
    q = quantize_model(trained, w, a, calibration=[xte[:256]])
    assert abs(_acc(q, xte, yte) - base) <= 0.5
    assert q.conv2.act_signed is False and q.fc.act_signed is False  # inputs after ReLU: unsigned
    assert isinstance(trained.conv1, nn.Conv2d)  # input model untouched
    q4 = quantize_model(trained, {n: 4 for n in LAYERS}, {"conv2": 4, "fc": 4}, calibration=xte[:256])
    assert _acc(q4, xte, yte) > base - 15


def test_two_bit_kl_survives_spiky_histograms(trained, digits) -> None:
    # digits have 17 grey levels and 2-bit conv1 weights make conv2's input take few distinct
    # values; a KL search on 2048 fine bins once clipped it at 0.2% of its range (chance accuracy)
    _, _, xte, yte = digits
    q = quantize_model(trained, {n: 2 for n in LAYERS}, {"conv2": 2, "fc": 2}, calibration=xte[:256])
    with torch.no_grad():
        a = torch.relu(q.bn1(q.conv1(xte[:256])))
    assert a.unique().numel() < 0.2 * a.numel()  # spiky indeed
    scale, signed = activation_scale(a, 2, method="kl")
    assert not signed and scale * 3 > 0.2 * float(a.max())
    assert q.conv2.act_scale * 3 > 0.2 * float(a.max())
    assert _acc(q, xte, yte) > 85


def test_calibration_observes_the_float_model(trained, digits) -> None:
    """Activation ranges come from the float model (HAQ's calibrate, PyTorch PTQ): a layer's range
    does not depend on the bits of the layers before it."""
    _, _, xte, _ = digits
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


BIT_CASES = [
    ({"conv1": 8, "conv2": 3, "fc": 2}, {"conv2": 4, "fc": 6}),
    ({"conv1": 8, "conv2": 2, "fc": 8}, {"conv2": 2, "fc": 8}),
    ({"conv2": 4}, {"conv1": 8, "fc": 1}),
    ({"conv1": 5, "fc": 3}, {}),
]


@pytest.mark.parametrize("scheme", ["linear", "kmeans"])
def test_cache_builds_the_same_model(trained, digits, scheme) -> None:
    _, _, xte, _ = digits
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


def test_cache_sees_changed_weights_and_data(trained, digits) -> None:
    _, _, xte, _ = digits
    m = _copy_model(trained)
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


def test_cache_keeps_loaded_codes(tmp_path, trained, digits) -> None:
    _, _, xte, _ = digits
    q = quantize_model(trained, {"conv1": 8, "conv2": 3, "fc": 2}, {"conv2": 4}, config=QuantConfig(weight_scheme="kmeans"),
                       calibration=xte[:128])
    save_packed(q, tmp_path / "q.amcq")
    loaded = load_packed(tmp_path / "q.amcq")
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


def test_copy_model_is_a_deep_copy() -> None:
    m = TinyCNN()
    m.head = m.fc  # a shared submodule
    m.tied = nn.Linear(2 * 16 * 4 * 4, 10)
    m.tied.weight = m.fc.weight  # a tied parameter
    m.notes = {"k": [1, 2]}
    calls = []
    m.conv1.register_forward_hook(lambda mod, i, o: calls.append(1))
    c = _copy_model(m)
    assert c.head is c.fc and c.tied.weight is c.fc.weight and c.fc is not m.fc
    assert c.notes == m.notes and c.notes["k"] is not m.notes["k"]
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), c.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2) and v1.data_ptr() != v2.data_ptr()
    x = TinyCNN.example_inputs(3)
    with torch.no_grad():
        assert torch.equal(c(x), m(x))
        c.conv2.weight.zero_()
        assert not torch.equal(c(x), m(x))
    assert len(calls) == 4  # the hook was copied too
    assert c.bn1.running_mean is not m.bn1.running_mean
    assert isinstance(c.fc.weight, nn.Parameter) and c.fc.weight.requires_grad


def test_signed_input_detected(trained, digits) -> None:
    _, _, xte, _ = digits
    q = quantize_model(trained, {}, {"conv1": 8}, calibration=xte[:64])
    assert q.conv1.act_signed is True and q.conv1.w_bits is None


def test_calibration_required_and_inplace() -> None:
    m = TinyCNN()
    with pytest.raises(AmcError, match="calibration"):
        quantize_model(m, {"conv2": 8}, {"conv2": 8})
    wrapper = QuantWrapper(nn.Linear(4, 2), 8, 8, name="head")
    with pytest.raises(AmcError, match="head.*never calibrated"):
        wrapper(torch.randn(3, 4))
    q = quantize_model(m, {"conv2": 8}, inplace=True)
    assert q is m and isinstance(m.conv2, QuantWrapper)


def test_weight_cache_reused_in_eval_and_refreshed_on_change(monkeypatch) -> None:
    q = quantize_model(TinyCNN().eval(), {n: 4 for n in LAYERS})
    calls = {"n": 0}
    orig = QuantWrapper._quantize_now

    def counting(self, w):
        calls["n"] += 1
        return orig(self, w)

    monkeypatch.setattr(QuantWrapper, "_quantize_now", counting)
    x = TinyCNN.example_inputs(4)
    with torch.no_grad():
        y1 = q(x)
        q(x)
    assert calls["n"] == 0  # quantized once, inside quantize_model
    with torch.no_grad():
        q.conv2.module.weight.mul_(2.0)
        y2 = q(x)
    assert calls["n"] == 1 and not torch.allclose(y1, y2)


def test_qat_lowers_loss(digits) -> None:
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits
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


# -- storage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_bits_roundtrip(bits) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=1001, dtype=np.uint8)
    data = pack_bits(codes, bits)
    assert data.dtype == np.uint8 and data.size == math.ceil(1001 * bits / 8)
    assert np.array_equal(unpack_bits(data, bits, 1001), codes)


def test_huffman_lengths() -> None:
    lengths = huffman_code_lengths({0: 5, 1: 2, 2: 1, 3: 1})
    assert lengths == {0: 1, 1: 2, 2: 3, 3: 3}
    assert sum(2.0 ** -v for v in lengths.values()) == 1.0  # Kraft equality: a full prefix code
    assert huffman_code_lengths({7: 10}) == {7: 1}


@pytest.mark.parametrize("scheme,bits", [("linear", 4), ("linear", 2), ("ternary", 2), ("kmeans", 3), ("linear", 8)])
def test_packed_size_matches_storage(tmp_path, scheme, bits) -> None:
    torch.manual_seed(0)
    m = MLP()  # 136k weights
    n_weights = sum(mod.weight.numel() for mod in (m.fc1, m.fc2, m.fc3))
    assert n_weights > 100_000
    q = quantize_model(m, {n: bits for n in ("fc1", "fc2", "fc3")}, config=QuantConfig(weight_scheme=scheme))
    storage = weight_storage_bits(q) / 8
    assert storage == n_weights * bits / 8
    size = save_packed(q, tmp_path / "m.amcq")
    assert storage <= size <= 1.05 * storage + 8 * 1024, (size, storage)
    huff = huffman_size_bits(q)
    assert huff <= weight_storage_bits(q)
    if scheme == "ternary":  # many zeros: Huffman really gains
        assert huff < 0.9 * weight_storage_bits(q)
    float_size = save_packed(quantize_model(m, {}), tmp_path / "f.amcq")
    assert float_size > 0.9 * 32 / bits * storage


def test_packed_size_with_batchnorm(tmp_path) -> None:
    m = TinyCNN(width=64)  # 148k weights, with BN and biases
    q = quantize_model(m, {n: 4 for n in LAYERS})
    storage = weight_storage_bits(q) / 8
    other = sum(v.numel() * v.element_size() for k, v in q.state_dict().items()
                if isinstance(v, torch.Tensor) and not k.endswith("module.weight"))
    size = save_packed(q, tmp_path / "m.amcq")
    assert storage + other <= size <= 1.05 * storage + other + 8 * 1024, (size, storage, other)


@pytest.mark.parametrize("scheme", ["linear", "kmeans"])
def test_pack_load_equality(tmp_path, trained, digits, scheme) -> None:
    _, _, xte, _ = digits
    cfg = QuantConfig(weight_scheme=scheme)
    q = quantize_model(trained, {"conv1": 8, "conv2": 3, "fc": 2}, {"conv2": 4, "fc": 6}, config=cfg,
                       calibration=xte[:128])
    save_packed(q, tmp_path / "q.amcq")
    with torch.no_grad():
        y = q(xte)
        for loaded in (load_packed(tmp_path / "q.amcq"), load_packed(tmp_path / "q.amcq", model=TinyCNN())):
            assert torch.equal(loaded(xte), y)
            assert loaded.conv2.w_bits == 3 and loaded.fc.a_bits == 6 and loaded.conv2.act_scale == q.conv2.act_scale
            assert weight_storage_bits(loaded) == weight_storage_bits(q)


def test_load_packed_errors(tmp_path) -> None:
    with pytest.raises(AmcError, match="not found"):
        load_packed(tmp_path / "missing.amcq")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(AmcError, match="not an amc packed model"):
        load_packed(tmp_path / "other.pt")
