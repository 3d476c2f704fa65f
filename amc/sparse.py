"""Honest storage of fine-grained (unstructured) sparse layers, as Deep Compression stores them.

Deep Compression (Han et al., ICLR 2016, section 2 and figure 2) stores a pruned layer as its
nonzero values plus *relative* indices: the number of zeros skipped before each value, in a fixed
number of bits ``w``; a gap longer than ``2^w - 1`` is bridged by filler entries. Here a filler is
the index symbol ``2^w - 1`` ("skip ``2^w - 1`` positions, no value"), so fillers cost index bits
only; every other symbol ``d`` in ``[0, 2^w - 2]`` means "skip ``d`` zeros, then a value".

Per layer the smallest of three layouts is stored:

========== ============================================== ======================================
layout     index                                          values
========== ============================================== ======================================
dense      none                                           every weight
bitmask    one bit per weight (1 = nonzero)               the nonzero weights
relative   ``entries x w`` bits, ``w`` in 1..16 chosen    the nonzero weights
           per layer (``entries`` = nonzeros + fillers)
========== ============================================== ======================================

Values are the layer's integer codes (``value_bits`` each; the codebook or scales are stored by
:func:`amc.quantization.pack_model` next to them) or float32 for unquantized layers. With
``huffman=True`` the codes and the relative indices are Huffman-coded per layer (Deep Compression,
section 4; the code-length tables are stored too) whenever that is smaller.

:func:`sparse_bits` is the closed-form *expected* size of a layer with randomly placed nonzeros, which
the cost model (:meth:`amc.cost.CostModel.metric`, ``size`` with a density) and the search's ``size=``
budget use; :func:`choose_layout` gives the exact size of given weights.

How models use it: :func:`amc.quantization.pack_model` (``sparse=True``, as :mod:`amc.export` writes)
stores each quantized layer by :func:`encode_codes` where that is smaller than bit-packing, and
:func:`amc.quantization.unpack_model` reads it back with :func:`decode_codes`; :func:`sparsify_state` /
:func:`densify_state` do the same for the float weights of a ``state_dict``. Both round trips are exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from amc._huffman import code_lengths, huffman_decode, huffman_encode, pack_bits, unpack_bits
from amc.errors import AmcError

if TYPE_CHECKING:
    from amc.quantization.schemes import QuantizedWeight

__all__ = [
    "INDEX_BITS",
    "LAYOUTS",
    "SparseChoice",
    "choose_layout",
    "decode_codes",
    "decode_mask",
    "densify_state",
    "encode_codes",
    "expected_index_entries",
    "index_entries",
    "sparse_bits",
    "sparse_bits_array",
    "sparsify_state",
]

LAYOUTS = ("dense", "bitmask", "relative")
#: relative index widths tried per layer
INDEX_BITS = tuple(range(1, 17))
FLOAT_BITS = 32


@dataclass(frozen=True)
class SparseChoice:
    """The layout picked for one layer and its size in bits (index + values, tables included)."""

    layout: str
    index_bits: int  # relative layout only (0 otherwise)
    bits: float


# --------------------------------------------------------------------------------------------------
# sizes


def _gaps(positions: np.ndarray) -> np.ndarray:
    """Zeros skipped before each nonzero, given its sorted flat positions."""
    return np.diff(np.asarray(positions, dtype=np.int64), prepend=-1) - 1


def index_entries(positions: np.ndarray, index_bits: int) -> int:
    """Relative-index entries (nonzeros + fillers) of nonzeros at sorted flat ``positions``."""
    m = (1 << index_bits) - 1
    return int(len(positions) + (_gaps(positions) // m).sum())


def expected_index_entries(numel: int, nnz: float, index_bits: int) -> float:
    """Expected entries when ``nnz`` of ``numel`` positions are nonzero at random: each gap is
    geometric with ``p = nnz / numel``, and ``E[floor(G / m)] = q^m / (1 - q^m)``, ``q = 1 - p``."""
    if nnz <= 0:
        return 0.0
    p = min(1.0, nnz / numel)
    m = (1 << index_bits) - 1
    qm = (1.0 - p) ** m
    return float(nnz * (1.0 + qm / (1.0 - qm)))


def _expected_layout_bits(numel: np.ndarray, density: np.ndarray, value_bits: np.ndarray) -> np.ndarray:
    """``(2 + len(INDEX_BITS), L)`` expected bits of ``L`` layers with randomly placed nonzeros in each
    layout: dense, bitmask, then relative per index width (``inf`` where a layer has no zero)."""
    numel = np.asarray(numel, dtype=np.float64)
    p = np.clip(np.asarray(density, dtype=np.float64), 0.0, 1.0)
    nnz = p * numel
    values = nnz * np.asarray(value_bits, dtype=np.float64)
    w = np.asarray(INDEX_BITS, dtype=np.float64)[:, None]  # (W, 1)
    qm = (1.0 - p)[None, :] ** (2.0 ** w - 1.0)  # (W, L); fillers: see expected_index_entries
    fillers = np.where(qm < 1.0, qm / np.where(qm < 1.0, 1.0 - qm, 1.0), 0.0)
    sparse = np.vstack([numel + values, nnz * (1.0 + fillers) * w + values])
    return np.vstack([numel * np.asarray(value_bits, dtype=np.float64), np.where(p < 1.0, sparse, np.inf)])


def sparse_bits(numel: float, density: float, value_bits: float) -> SparseChoice:
    """Expected storage of a layer of ``numel`` weights of which ``density`` are nonzero (randomly
    placed), each nonzero stored in ``value_bits``: the smallest layout."""
    bits = _expected_layout_bits(np.array([numel]), np.array([density]), np.array([value_bits]))[:, 0]
    i = int(np.argmin(bits))  # the first of equals
    return SparseChoice(LAYOUTS[min(i, 2)], INDEX_BITS[i - 2] if i >= 2 else 0, float(bits[i]))


def sparse_bits_array(numel: np.ndarray, density: np.ndarray, value_bits: np.ndarray) -> np.ndarray:
    """:func:`sparse_bits` of many layers at once (the bits of each layer's smallest layout), for the
    cost model: ``(L,)`` arrays in, ``(L,)`` bits out."""
    return _expected_layout_bits(numel, density, value_bits).min(0)


def _relative_symbols(positions: np.ndarray, index_bits: int) -> np.ndarray:
    """The relative-index stream: per gap ``g``, ``g // m`` fillers ``m`` then ``g % m`` (``m = 2^w - 1``)."""
    m = (1 << index_bits) - 1
    gaps = _gaps(positions)
    fill = gaps // m
    out = np.full(len(gaps) + int(fill.sum()), m, dtype=np.int64)
    ends = np.cumsum(fill + 1) - 1  # each gap's value entry comes after its fillers
    out[ends] = gaps % m
    return out


def _positions(symbols: np.ndarray, index_bits: int) -> np.ndarray:
    m = (1 << index_bits) - 1
    s = np.asarray(symbols, dtype=np.int64)
    cursor = np.cumsum(np.where(s == m, m, s + 1)) - 1
    return cursor[s != m]


def _stream_bits(symbols: np.ndarray, width: int) -> tuple[int, bool]:
    """(bits, Huffman-coded?) of the cheaper coding of a symbol stream (tables included)."""
    fixed = len(symbols) * width
    if len(symbols) == 0:
        return fixed, False
    lengths = code_lengths(np.bincount(np.asarray(symbols, dtype=np.int64), minlength=1 << width))
    coded = int(lengths[symbols].sum()) + 8 * len(lengths)
    return (coded, True) if coded < fixed else (fixed, False)


def choose_layout(mask: np.ndarray, value_bits: int, *, values: np.ndarray | None = None,
                  huffman: bool = False) -> SparseChoice:
    """The smallest exact layout of a layer whose nonzeros are ``mask`` (flat bool). ``values``: the
    integer codes of the nonzeros (``value_bits`` each), needed only with ``huffman``."""
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    numel, nnz = mask.size, int(mask.sum())
    if huffman and values is None:
        raise ValueError("choose_layout(huffman=True) needs the values")
    vbits = _stream_bits(values, value_bits)[0] if huffman else nnz * value_bits
    choices = [SparseChoice("dense", 0, numel * value_bits)]  # a dense layer is never Huffman-coded here
    if nnz < numel:
        choices.append(SparseChoice("bitmask", 0, numel + vbits))
        pos = np.flatnonzero(mask)
        for w in INDEX_BITS:
            ibits = _stream_bits(_relative_symbols(pos, w), w)[0] if huffman else index_entries(pos, w) * w
            choices.append(SparseChoice("relative", w, ibits + vbits))
    return min(choices, key=lambda c: c.bits)  # the first of equals



# --------------------------------------------------------------------------------------------------
# bit streams


def _write_stream(symbols: np.ndarray, width: int, huffman: bool, chunks: list[np.ndarray]) -> dict[str, Any]:
    """Append a symbol stream to ``chunks``; its entry in the layout."""
    if huffman and _stream_bits(symbols, width)[1]:
        lengths, data, _ = huffman_encode(symbols, 1 << width)
        chunks += [lengths, data]
        return {"n": len(symbols), "width": width, "huffman": [len(lengths), len(data)]}
    data = pack_bits(symbols, width)
    chunks.append(data)
    return {"n": len(symbols), "width": width, "bytes": len(data)}


def _read_stream(entry: Mapping[str, Any], blob: np.ndarray, off: int) -> tuple[np.ndarray, int]:
    n, width = int(entry["n"]), int(entry["width"])
    if "huffman" in entry:
        nl, nd = entry["huffman"]
        lengths, data = blob[off: off + nl], blob[off + nl: off + nl + nd]
        return huffman_decode(lengths, data, n), off + nl + nd
    nb = int(entry["bytes"])
    return unpack_bits(blob[off: off + nb], width, n), off + nb


def _encode(mask: np.ndarray, values: np.ndarray | None, value_bits: int, huffman: bool,
            raw_values: bytes | None = None) -> tuple[dict[str, Any], np.ndarray] | None:
    """One layer: ``(entry, bytes)``, or None when the dense layout is the smallest; ``values`` are the
    nonzeros' codes, or ``raw_values`` their bytes."""
    choice = choose_layout(mask, value_bits, values=values if huffman else None, huffman=huffman)
    if choice.layout == "dense":
        return None
    chunks: list[np.ndarray] = []
    entry: dict[str, Any] = {"layout": choice.layout, "numel": int(mask.size), "nnz": int(mask.sum())}
    if choice.layout == "bitmask":
        chunks.append(np.packbits(mask.astype(np.uint8)))
    else:  # relative
        entry["index"] = _write_stream(_relative_symbols(np.flatnonzero(mask), choice.index_bits),
                                       choice.index_bits, huffman, chunks)
    if raw_values is not None:
        chunks.append(np.frombuffer(raw_values, dtype=np.uint8))
    else:
        entry["values"] = _write_stream(values, value_bits, huffman, chunks)
    return entry, np.concatenate(chunks)  # an index and the values: never an empty list


def decode_mask(entry: Mapping[str, Any], blob: np.ndarray, off: int = 0) -> tuple[np.ndarray, int]:
    """The nonzero mask (flat bool) of an encoded layer at ``blob[off:]``; returns it and the offset of
    the values that follow."""
    numel = int(entry["numel"])
    if entry["layout"] == "dense":
        return np.ones(numel, dtype=bool), off
    if entry["layout"] == "bitmask":
        nb = (numel + 7) // 8
        return np.unpackbits(blob[off: off + nb])[:numel].astype(bool), off + nb
    if entry["layout"] != "relative":
        raise AmcError(f"unknown sparse layout {entry['layout']!r}; valid: {', '.join(LAYOUTS)}")
    symbols, off = _read_stream(entry["index"], blob, off)
    mask = np.zeros(numel, dtype=bool)
    pos = _positions(symbols, int(entry["index"]["width"]))
    if len(pos) != int(entry["nnz"]) or (len(pos) and pos[-1] >= numel):
        raise AmcError("corrupt sparse index stream")
    mask[pos] = True
    return mask, off


# --------------------------------------------------------------------------------------------------
# packages (quantized models) and state dicts (float models)


def encode_codes(qw: QuantizedWeight, *, huffman: bool = False) -> tuple[dict[str, Any], np.ndarray] | None:
    """One quantized layer's codes in the smallest layout its zeros allow (with ``huffman``, Huffman-coded
    where smaller): ``(entry, bytes)``, or None when plain bit-packing is as small.
    :func:`amc.quantization.pack_model` stores layers so, :func:`decode_codes` reads them back."""
    codes = qw.codes.reshape(-1).cpu().numpy().astype(np.int64)
    zc = np.unique(codes[qw.dequantize().reshape(-1).cpu().numpy() == 0])
    z = int(zc[0]) if len(zc) == 1 else None  # the code that means 0.0; none when absent or ambiguous
    mask = codes != z if z is not None else np.ones(codes.size, dtype=bool)
    encoded = _encode(mask, codes[mask], qw.bits, huffman)
    if encoded is None and huffman:  # dense, but its codes alone may Huffman-code smaller
        parts: list[np.ndarray] = []
        stream = _write_stream(codes, qw.bits, True, parts)
        encoded = ({"layout": "dense", "numel": int(codes.size), "nnz": int(codes.size), "values": stream},
                   np.concatenate(parts))
    if encoded is None or encoded[1].size >= (codes.size * qw.bits + 7) // 8:  # the bit-packed size
        return None
    return {**encoded[0], "zero_code": z}, encoded[1]


def decode_codes(sp: Mapping[str, Any], data: np.ndarray) -> np.ndarray:
    """The codes (flat ``uint8``) of a layer that :func:`encode_codes` stored as ``sp``, from its bytes
    ``data``."""
    mask, vo = decode_mask(sp, data)
    codes = np.full(int(sp["numel"]), -1 if sp["zero_code"] is None else int(sp["zero_code"]), np.int64)
    codes[mask] = _read_stream(sp["values"], data, vo)[0]
    if (codes < 0).any():
        raise AmcError("corrupt sparse layer: zeros without a zero code")
    return codes.astype(np.uint8)


def sparsify_state(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Move the float conv/linear weights of ``state`` that a sparse layout stores smaller out of it:
    ``(remaining state, {"layers": {key: entry}, "data": uint8 tensor})`` (``None``: nothing moved)."""
    rest = dict(state)
    layers: dict[str, Any] = {}
    chunks: list[np.ndarray] = []
    for name, m in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or key not in rest or rest[key].dtype != torch.float32:
            continue
        w = rest[key].detach().cpu().contiguous().reshape(-1)
        mask = (w != 0).numpy()
        encoded = _encode(mask, None, FLOAT_BITS, False, raw_values=w[torch.from_numpy(mask)].numpy().tobytes())
        if encoded is None:
            continue
        entry, data = encoded
        layers[key] = {**entry, "shape": list(rest.pop(key).shape), "offset": sum(c.size for c in chunks)}
        chunks.append(data)
    if not layers:
        return state, None
    return rest, {"layers": layers, "data": torch.from_numpy(np.concatenate(chunks))}


def densify_state(state: Mapping[str, torch.Tensor], sparse: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
    """Undo :func:`sparsify_state`: ``state`` with the sparse weights put back (exact)."""
    out = dict(state)
    if not sparse:
        return out
    blob = sparse["data"].numpy()
    for key, e in sparse["layers"].items():
        mask, vo = decode_mask(e, blob, int(e["offset"]))
        w = np.zeros(int(e["numel"]), dtype=np.float32)
        w[mask] = np.frombuffer(blob[vo: vo + 4 * int(mask.sum())].tobytes(), dtype=np.float32)
        out[key] = torch.from_numpy(w).reshape(e["shape"])
    return out

