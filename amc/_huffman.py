"""Bit streams of small integers: fixed-width packing and canonical Huffman coding, for
:mod:`amc.quantization` (packed weight codes) and :mod:`amc.sparse` (sparse indices and values).

A Huffman-coded stream is stored as its code-length table (one ``uint8`` per alphabet symbol, 0 =
absent) and the bit-packed codes, MSB first. Canonical codes (Schwartz & Kallick 1964; as DEFLATE
uses) are fully determined by the lengths, so no tree is stored.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["canonical_codes", "code_lengths", "huffman_decode", "huffman_encode", "pack_bits", "unpack_bits"]


def _word(width: int) -> np.dtype:
    """The big-endian unsigned dtype that holds ``width``-bit values (width 1..32)."""
    if not 1 <= width <= 32:
        raise ValueError(f"bits must be in 1..32, got {width}")
    return np.dtype(">u1" if width <= 8 else ">u2" if width <= 16 else ">u4")


def pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Pack non-negative integers (each ``< 2**width``) into a ``uint8`` byte stream, MSB first.

    ``n`` values take ``ceil(n * width / 8)`` bytes.
    """
    word = _word(width)
    v = np.asarray(values).reshape(-1)
    if v.size and (int(v.min()) < 0 or int(v.max()) >= (1 << width)):
        raise ValueError(f"a code does not fit in {width} bits (range {int(v.min())}..{int(v.max())})")
    planes = np.unpackbits(np.ascontiguousarray(v, dtype=word)[:, None].view(np.uint8), axis=1)
    return np.packbits(planes[:, 8 * word.itemsize - width:].reshape(-1))  # the low `width` bits


def unpack_bits(data: np.ndarray, width: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``n`` ``width``-bit values (the smallest unsigned dtype)."""
    word = _word(width)
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8))[: n * width].reshape(n, width)
    planes = np.zeros((n, 8 * word.itemsize), dtype=np.uint8)
    planes[:, planes.shape[1] - width:] = bits
    return np.packbits(planes, axis=1).view(word).reshape(-1).astype(word.newbyteorder("="), copy=False)


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Optimal prefix-code length per symbol (``int64``, 0 for symbols that never occur) for the
    symbol frequencies ``counts`` (``(alphabet,)``). A lone symbol gets 1 bit."""
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(present) == 1:
        lengths[present] = 1
    if len(present) <= 1:
        return lengths
    # merge the two lightest nodes; parent[] links every node to the node it was merged into
    parent: list[int] = [-1] * len(present)
    heap = [(int(counts[s]), i) for i, s in enumerate(present)]
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, a = heapq.heappop(heap)
        w2, b = heapq.heappop(heap)
        node = len(parent)
        parent.append(-1)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (w1 + w2, node))
    depth = [0] * len(parent)
    for node in range(len(parent) - 2, -1, -1):  # parents come after their children
        depth[node] = depth[parent[node]] + 1
    lengths[present] = depth[: len(present)]
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code (an int, read MSB first over its length) of each symbol of ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        codes[s], prev = code, int(lengths[s])
        code += 1
    return codes


def huffman_encode(symbols: np.ndarray, alphabet: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(lengths uint8 (alphabet,), packed uint8 bytes, n_bits)`` of the Huffman coding of ``symbols``
    (integers in ``[0, alphabet)``)."""
    sym = np.asarray(symbols, dtype=np.int64).reshape(-1)
    lengths = code_lengths(np.bincount(sym, minlength=alphabet))
    if lengths.max(initial=0) > 255:
        raise ValueError("a Huffman code is longer than 255 bits")
    codes = canonical_codes(lengths)
    ln, cd = lengths[sym], codes[sym]  # (n,)
    total = int(ln.sum())
    owner = np.repeat(np.arange(len(sym)), ln)  # (total,) symbol each bit belongs to
    starts = np.cumsum(ln) - ln
    shift = ln[owner] - 1 - (np.arange(total) - starts[owner])  # bit position inside its code, MSB first
    bits = ((cd[owner] >> shift) & 1).astype(np.uint8)
    return lengths.astype(np.uint8), np.packbits(bits), total


def huffman_decode(lengths: np.ndarray, data: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`huffman_encode`: the first ``n`` symbols (``int64``)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = canonical_codes(lengths)
    table = {(int(lengths[s]), int(codes[s])): s for s in np.flatnonzero(lengths).tolist()}
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8)).tolist()
    out = np.empty(n, dtype=np.int64)
    pos, max_len = 0, int(lengths.max(initial=0))
    for i in range(n):
        code = length = 0
        while True:
            if length >= max_len or pos >= len(bits):
                raise ValueError("corrupt Huffman stream")
            code = (code << 1) | bits[pos]
            pos += 1
            length += 1
            s = table.get((length, code))
            if s is not None:
                out[i] = s
                break
    return out
