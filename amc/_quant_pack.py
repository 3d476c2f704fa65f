"""Bit packing of n-bit integer codes and Huffman code lengths, for :mod:`amc.quantization`."""

from __future__ import annotations

import heapq
import itertools

import numpy as np

__all__ = ["huffman_code_lengths", "huffman_bits", "pack_bits", "unpack_bits"]


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integer codes (each ``< 2**bits``) into a ``uint8`` byte stream, MSB first.

    ``n`` codes take ``ceil(n * bits / 8)`` bytes.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    c = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if c.size and int(c.max()) >= (1 << bits):
        raise ValueError(f"a code does not fit in {bits} bits (max {int(c.max())})")
    planes = np.unpackbits(c[:, None], axis=1)[:, 8 - bits:]  # (n, bits): the low `bits` bits
    return np.packbits(planes.reshape(-1))


def unpack_bits(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``n`` ``bits``-bit codes as ``uint8``."""
    flat = np.unpackbits(np.ascontiguousarray(data, dtype=np.uint8))[: n * bits].reshape(n, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)  # MSB first
    return (flat.astype(np.uint16) @ weights).astype(np.uint8)


def huffman_code_lengths(freqs: dict[int, int]) -> dict[int, int]:
    """Code length in bits of each symbol of an optimal (Huffman) prefix code for ``freqs``.

    A lone symbol gets 1 bit (a code must spend something per symbol).
    """
    items = [(int(f), s) for s, f in freqs.items() if f > 0]
    if not items:
        return {}
    if len(items) == 1:
        return {items[0][1]: 1}
    tie = itertools.count()  # equal weights: never compare the lists
    heap = [(f, next(tie), [s]) for f, s in items]
    heapq.heapify(heap)
    lengths = {s: 0 for _, s in items}
    while len(heap) > 1:
        f1, _, s1 = heapq.heappop(heap)
        f2, _, s2 = heapq.heappop(heap)
        for s in s1:
            lengths[s] += 1
        for s in s2:
            lengths[s] += 1
        heapq.heappush(heap, (f1 + f2, next(tie), s1 + s2))
    return lengths


def huffman_bits(codes: np.ndarray) -> int:
    """Total bits a Huffman coding of ``codes`` (integers) takes, code table excluded."""
    values, counts = np.unique(np.asarray(codes).reshape(-1), return_counts=True)
    lengths = huffman_code_lengths({int(v): int(c) for v, c in zip(values, counts)})
    return int(sum(int(c) * lengths[int(v)] for v, c in zip(values, counts)))
