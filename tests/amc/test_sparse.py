"""amc.sparse: layouts, exact round trips, the cost model's size against real files, Huffman."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import amc
from amc._huffman import code_lengths, huffman_decode, huffman_encode
from amc.compress import apply_policy
from amc.deep_compression import weight_bytes
from amc.errors import AmcError
from amc.export import export, read_metadata
from amc.quantization import load_packed
from amc.sparse import (
    _positions,
    _relative_symbols,
    choose_layout,
    decode_mask,
    densify_state,
    expected_index_entries,
    index_entries,
    sparse_bits,
    sparse_bits_array,
    sparsify_state,
)
from amc.training import load_checkpoint
from envs import CompressionEnv, EnvConfig
from tests._paths import LENET_DIGITS

REF = LENET_DIGITS


def test_relative_index_round_trip_with_fillers() -> None:
    pos = np.array([0, 1, 9, 40, 41, 200])
    sym = _relative_symbols(pos, 3)  # m = 7: a gap of 30 takes 4 fillers + 2
    assert sym.tolist() == [0, 0, 7, 0, 7, 7, 7, 7, 2, 0, 7] + [7] * 21 + [4]
    assert index_entries(pos, 3) == len(sym)
    assert _positions(sym, 3).tolist() == pos.tolist()


def test_layout_choice_per_density() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random(4000) < 0.97
    half = rng.random(4000) < 0.5
    sparse = rng.random(4000) < 0.03
    assert choose_layout(dense, 8).layout == "dense"
    c = choose_layout(half, 8)  # one bit per position: a bitmask, or the 1-bit relative index (no trailing zeros)
    assert (c.layout, c.index_bits) in (("bitmask", 0), ("relative", 1)) and c.bits <= half.size + half.sum() * 8
    c = choose_layout(sparse, 8)
    assert c.layout == "relative" and 4 <= c.index_bits <= 8
    assert c.bits == index_entries(np.flatnonzero(sparse), c.index_bits) * c.index_bits + int(sparse.sum()) * 8


@pytest.mark.parametrize("density", [0.01, 0.08, 0.3])
def test_expected_entries_match_random_layers(density) -> None:
    mask = np.random.default_rng(1).random(200_000) < density
    pos = np.flatnonzero(mask)
    for w in (2, 4, 6, 8):
        assert expected_index_entries(mask.size, len(pos), w) == pytest.approx(index_entries(pos, w), rel=0.02)
    assert sparse_bits(mask.size, mask.mean(), 5).bits == pytest.approx(choose_layout(mask, 5).bits, rel=0.02)
    arr = sparse_bits_array(np.array([mask.size]), np.array([mask.mean()]), np.array([5.0]))
    assert arr[0] == pytest.approx(sparse_bits(mask.size, mask.mean(), 5).bits)


def test_sparse_bits_dense_and_empty() -> None:
    assert sparse_bits(1000, 1.0, 32).bits == 32000
    assert sparse_bits_array(np.array([1000.0, 50.0]), np.array([1.0, 0.0]), np.array([32.0, 4.0])).tolist() == [32000, 0]


def test_float_state_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    with torch.no_grad():
        model[0].weight.mul_((torch.rand_like(model[0].weight) < 0.1).float())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rest, sp = sparsify_state(model, state)
    assert set(sp["layers"]) == {"0.weight"} and "0.weight" not in rest  # layer 2 is dense: stays
    back = densify_state(rest, sp)
    assert all(torch.equal(back[k], state[k]) for k in state)
    e = sp["layers"]["0.weight"]
    mask, _ = decode_mask(e, sp["data"].numpy(), e["offset"])
    assert mask.sum() == int((state["0.weight"] != 0).sum())


def test_huffman_round_trip_and_optimality() -> None:
    rng = np.random.default_rng(2)
    sym = np.minimum(rng.geometric(0.4, 5000) - 1, 15)
    lengths, data, nbits = huffman_encode(sym, 16)
    assert huffman_decode(lengths, data, len(sym)).tolist() == sym.tolist()
    assert nbits < len(sym) * 4  # skewed symbols code below their fixed 4 bits
    assert code_lengths(np.array([0, 5, 0])).tolist() == [0, 1, 0]  # a lone symbol still costs a bit
    # Kraft equality of a full binary tree
    ln = code_lengths(np.bincount(sym, minlength=16))
    assert sum(2.0 ** -int(x) for x in ln if x) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        huffman_decode(lengths, np.zeros(1, np.uint8), 1000)


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    return load_checkpoint(REF)[0].eval()


def test_env_size_matches_the_exported_file(lenet, digits, tmp_path) -> None:
    """The cost model's honest size (what the search budgets) against the file's weight bytes."""
    env = CompressionEnv(lenet, digits, EnvConfig(mode="joint", granularity="fine", target="size=0.06", lbound=0.05,
                                                  w_bits=(4, 8), eval_limit=50))
    assert env.decision_kinds.count("w_bits") == len(env.graph.layers) - 2  # first/last fixed at 8 bits
    rng = np.random.default_rng(0)
    for episode in range(3):
        env.reset(seed=episode)
        for _ in range(env.n_decisions):
            _, _, done, _, info = env.step(np.array([rng.random()], dtype=np.float32))
        policy, m = info["policy"], info["metrics"]
        assert m["size_ratio"] <= 0.06 + 1e-9
        assert all(ly.a_bits is None and ly.w_bits is not None for ly in policy.layers)
        model = apply_policy(lenet, policy, pruner=env.pruner)
        path = export(model, tmp_path / f"m{episode}.amc", policy=policy, model_spec=load_checkpoint(REF)[1]["model_spec"])
        est = m["size_bits"] / 8
        got = weight_bytes(path)
        assert abs(got - est) <= 0.05 * est + 16 * len(policy.layers), (got, est)  # + byte padding per stream
        assert path.stat().st_size <= est + 8192  # biases, layout, policy and zip headers: a fixed overhead
        assert read_metadata(path)["version"] == 2
        loaded = amc.load(path)
        x = digits.tensors("test")[0][:64]
        with torch.no_grad():
            assert torch.equal(loaded(x), model.eval()(x))


def test_huffman_export_round_trip_and_smaller(lenet, digits, tmp_path) -> None:
    from amc.deep_compression import make_policy, share_weights, shared_to_quantized
    from amc.models import example_input, resolve_spec
    from amc.pruning import magnitude_prune

    spec = load_checkpoint(REF)[1]["model_spec"]
    pol = make_policy(lenet, example_input(resolve_spec(spec)), density=0.1, bits=5, model_spec=spec)
    model = magnitude_prune(lenet, {ly.name: ly.sparsity for ly in pol.layers})
    model = shared_to_quantized(share_weights(model, {ly.name: 5 for ly in pol.layers}))
    plain = export(model, tmp_path / "plain.amc", policy=pol, model_spec=spec)
    huff = export(model, tmp_path / "huff.amc", policy=pol, model_spec=spec, huffman=True)
    assert weight_bytes(huff) < weight_bytes(plain)
    x = digits.tensors("test")[0][:64]
    with torch.no_grad():
        ref = model.eval()(x)
        assert torch.equal(amc.load(plain)(x), ref) and torch.equal(amc.load(huff)(x), ref)
        for path in (plain, huff):  # the no-unpickling path: the same architecture filled from the file
            assert torch.equal(load_packed(path, model=load_checkpoint(REF)[0])(x), ref)
    from amc.quantization import quantized_layers

    want = {n: (w.quantized_weight().codes, w.quantized_weight().centroids) for n, w in quantized_layers(model).items()}
    got = quantized_layers(amc.load(huff))
    assert set(got) == set(want)
    for n, (codes, cent) in want.items():  # the exact codes and codebook come back
        qw = got[n].quantized_weight()
        assert torch.equal(qw.codes, codes) and torch.equal(qw.centroids, cent)
        assert torch.equal(got[n].module.weight, cent[codes.long()])


def test_corrupt_relative_stream_is_an_error() -> None:
    mask = np.zeros(100, dtype=bool)
    mask[[3, 50]] = True
    entry = {"layout": "relative", "numel": 100, "nnz": 3, "index": {"n": 2, "width": 4, "bytes": 1}}
    with pytest.raises(AmcError, match="corrupt"):
        decode_mask(entry, np.array([0x3F], np.uint8))
    with pytest.raises(AmcError, match="unknown sparse layout"):
        decode_mask({"layout": "csr", "numel": 4}, np.zeros(1, np.uint8))
