"""Tests of amc.quantization.storage: bit packing, honest file size, the one model file format."""

from __future__ import annotations

import math
import pickle
import zlib

import numpy as np
import pytest
import torch

from amc._huffman import code_lengths, pack_bits, unpack_bits
from amc.errors import AmcError
from amc.export import EXPORT_FORMAT, load, read_metadata
from amc.quantization import (
    QuantConfig,
    huffman_size_bits,
    load_packed,
    pack_model,
    quantize_model,
    save_packed,
    skeleton_bytes,
    unpack_model,
    weight_storage_bits,
)
from tests.amc.quantization._models import LAYERS, MLP, TinyCNN


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_bits_roundtrip(bits) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=1001, dtype=np.uint8)
    data = pack_bits(codes, bits)
    assert data.dtype == np.uint8 and data.size == math.ceil(1001 * bits / 8)
    assert np.array_equal(unpack_bits(data, bits, 1001), codes)


def test_pack_bits_layout_by_hand() -> None:
    """MSB first: 3-bit codes 5, 1, 7 are the bits 101 001 11(1) -> bytes 0b10100111, 0b10000000."""
    assert pack_bits(np.array([5, 1, 7], np.uint8), 3).tolist() == [0b10100111, 0b10000000]
    with pytest.raises(ValueError, match="does not fit in 2 bits"):
        pack_bits(np.array([4], np.uint8), 2)


def test_huffman_lengths() -> None:
    lengths = code_lengths(np.array([5, 2, 1, 1]))
    assert lengths.tolist() == [1, 2, 3, 3]
    assert sum(2.0 ** -int(v) for v in lengths) == 1.0  # Kraft equality: a full prefix code
    assert code_lengths(np.array([0] * 7 + [10])).tolist() == [0] * 7 + [1]


@pytest.mark.parametrize("scheme,bits", [("linear", 4), ("linear", 2), ("ternary", 2), ("kmeans", 3), ("linear", 8)])
def test_packed_size_matches_storage(tmp_path, scheme, bits) -> None:
    torch.manual_seed(0)
    m = MLP()  # 136k weights
    n_weights = sum(mod.weight.numel() for mod in (m.fc1, m.fc2, m.fc3))
    assert n_weights > 100_000
    q = quantize_model(m, {n: bits for n in ("fc1", "fc2", "fc3")}, config=QuantConfig(weight_scheme=scheme))
    storage = weight_storage_bits(q) / 8
    assert storage == n_weights * bits / 8
    size = save_packed(q, tmp_path / "m.amc")
    assert storage <= size <= 1.05 * storage + 8 * 1024, (size, storage)
    huff = huffman_size_bits(q)
    assert huff <= weight_storage_bits(q)
    if scheme == "ternary":  # many zeros: Huffman really gains
        assert huff < 0.9 * weight_storage_bits(q)
    float_size = save_packed(quantize_model(m, {}), tmp_path / "f.amc")
    assert float_size > 0.9 * 32 / bits * storage


def test_packed_size_with_batchnorm(tmp_path) -> None:
    m = TinyCNN(width=64)  # 148k weights, with BN and biases
    q = quantize_model(m, {n: 4 for n in LAYERS})
    storage = weight_storage_bits(q) / 8
    other = sum(v.numel() * v.element_size() for k, v in q.state_dict().items()
                if isinstance(v, torch.Tensor) and not k.endswith("module.weight"))
    size = save_packed(q, tmp_path / "m.amc")
    assert storage + other <= size <= 1.05 * storage + other + 8 * 1024, (size, storage, other)


@pytest.mark.parametrize("scheme", ["linear", "kmeans"])
def test_pack_load_equality(tmp_path, trained, digits_xy, scheme) -> None:
    _, _, xte, _ = digits_xy
    cfg = QuantConfig(weight_scheme=scheme)
    q = quantize_model(trained, {"conv1": 8, "conv2": 3, "fc": 2}, {"conv2": 4, "fc": 6}, config=cfg,
                       calibration=xte[:128])
    save_packed(q, tmp_path / "q.amc")
    with torch.no_grad():
        y = q(xte)
        for loaded in (load_packed(tmp_path / "q.amc"), load_packed(tmp_path / "q.amc", model=TinyCNN())):
            assert torch.equal(loaded(xte), y)
            assert loaded.conv2.w_bits == 3 and loaded.fc.a_bits == 6 and loaded.conv2.act_scale == q.conv2.act_scale
            assert weight_storage_bits(loaded) == weight_storage_bits(q)


def test_one_file_format(tmp_path, trained, digits_xy) -> None:
    """save_packed writes the file `amc export` writes: amc.export reads it, and back."""
    _, _, xte, _ = digits_xy
    q = quantize_model(trained, {"conv1": 8, "conv2": 3, "fc": 4}, {"conv2": 4}, calibration=xte[:128])
    path = tmp_path / "q.amc"
    size = save_packed(q, path)
    meta = read_metadata(path)
    assert meta["format"] == EXPORT_FORMAT and meta["quantized"] is True and meta["file_bytes"] == size
    with torch.no_grad():
        assert torch.equal(load(path)(xte), q(xte))
    doc = torch.load(path, weights_only=True)
    assert doc["packed"]["codes"].numel() == math.ceil((q.conv1.module.weight.numel() * 8
                                                         + q.conv2.module.weight.numel() * 3
                                                         + q.fc.module.weight.numel() * 4) / 8)


def test_earlier_standalone_files_still_load(tmp_path, trained, digits_xy) -> None:
    """Before there was one format, save_packed wrote the packed payload alone: such files load."""
    _, _, xte, _ = digits_xy
    q = quantize_model(trained, {"conv2": 2, "fc": 8}, {"fc": 8}, calibration=xte[:128],
                       config=QuantConfig(weight_scheme="kmeans"))
    torch.save(pack_model(q), tmp_path / "old.amcq")
    with torch.no_grad():
        for loaded in (load_packed(tmp_path / "old.amcq"), load_packed(tmp_path / "old.amcq", model=TinyCNN())):
            assert torch.equal(loaded(xte), q(xte)) and not loaded.training


def test_payload_without_architecture_needs_a_model(trained) -> None:
    q = quantize_model(trained, {"conv2": 4})
    payload = pack_model(q, include_architecture=False, float_dtype=torch.float16)
    assert payload["architecture"] is None and payload["float"].dtype == torch.float16
    with pytest.raises(AmcError, match="holds no architecture; pass model="):
        unpack_model(payload)
    x = TinyCNN.example_inputs(4)
    with torch.no_grad():
        assert torch.allclose(unpack_model(payload, model=TinyCNN()).eval()(x), q(x), atol=1e-2)
    with pytest.raises(AmcError, match="no layer 'conv2'"):
        unpack_model(payload, model=MLP())
    with pytest.raises(AmcError, match="float_dtype"):
        pack_model(q, float_dtype=torch.int8)


def test_skeleton_has_no_storage(trained) -> None:
    q = quantize_model(trained, {"conv2": 4})
    q(TinyCNN.example_inputs(2))  # fills the wrapper's weight cache: not part of the skeleton
    sk = pickle.loads(zlib.decompress(skeleton_bytes(q)))
    tensors = list(sk.parameters()) + list(sk.buffers())
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert [n for n, _ in sk.named_parameters()] == [n for n, _ in q.named_parameters()]
    assert sk.conv2.w_bits == 4 and not sk.conv2.pinned
    assert len(skeleton_bytes(q)) < 4096


def test_load_packed_errors(tmp_path) -> None:
    with pytest.raises(AmcError, match="not found"):
        load_packed(tmp_path / "missing.amcq")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(AmcError, match="not an amc packed model"):
        load_packed(tmp_path / "other.pt")
    (tmp_path / "junk.amc").write_bytes(b"not a torch file")
    with pytest.raises(AmcError, match="cannot read packed model"):
        load_packed(tmp_path / "junk.amc")
    save_packed(quantize_model(TinyCNN(), {}), tmp_path / "float.amc")
    with pytest.raises(AmcError, match="holds a float model"):
        load_packed(tmp_path / "float.amc", model=TinyCNN())
