"""Exact reuse across :func:`~amc.quantization.quantize_model` calls: :class:`QuantCache`.

Keys are content hashes of the bytes a result was computed from (weights, the whole float state and
architecture, the calibration batches), never object ids, so a hit returns what a fresh computation
would: the search passes one cache to every episode, and ``amc apply`` (no cache) rebuilds the very
same model.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.quantization.observers import ActObserver
from amc.quantization.schemes import QuantizedWeight
from amc.quantization.wrapper import QuantWrapper


def digest(t: torch.Tensor) -> bytes:
    """A hash of a tensor's exact contents (bytes), dtype, shape and device."""
    t = t.detach()
    h = hashlib.sha1(usedforsecurity=False)  # not for security: a content key, fast (SHA-NI)
    h.update(f"{t.dtype}|{tuple(t.shape)}|{t.device}".encode())
    if t.numel():
        h.update(memoryview(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy()))
    return h.digest()


class ModelFingerprint:
    """The float model a (possibly wrapped) model computes during calibration, as hashes: one per
    parameter/buffer under its unwrapped name (``conv1.module.weight`` -> ``conv1.weight``) in
    ``tensors``, and one of the whole (architecture: module names, types and ``extra_repr``; and
    every tensor) in ``model``."""

    def __init__(self, model: nn.Module) -> None:
        prefixes = [(f"{n}.module" if n else "module", n) for n, m in model.named_modules()
                    if isinstance(m, QuantWrapper)]

        def norm(name: str) -> str:
            for pre, n in prefixes:
                if name == pre or name.startswith(pre + "."):
                    return (n + name[len(pre):]).lstrip(".")
            return name

        h = hashlib.sha1(usedforsecurity=False)
        for name, m in model.named_modules():
            if not isinstance(m, QuantWrapper):
                h.update(f"{norm(name)}:{type(m).__module__}.{type(m).__qualname__}({m.extra_repr()})\n".encode())
        self.tensors: dict[str, bytes] = {}
        for name, t in itertools.chain(model.named_parameters(remove_duplicate=False),
                                       model.named_buffers(remove_duplicate=False)):  # (None ones skipped)
            d = self.tensors[norm(name)] = digest(t)
            h.update(norm(name).encode() + b"=" + d)
        self.model = h.digest()

    def weight(self, layer: str) -> bytes:
        """The hash of layer ``layer``'s float weight."""
        return self.tensors[f"{layer}.weight" if layer else "weight"]


class CalibrationStats:
    """What a :class:`QuantCache` keeps of one float model on one set of calibration batches: the
    input observer of each layer (``observers``, filled by the caller) and the scales derived."""

    def __init__(self, cache: QuantCache) -> None:
        self._cache = cache
        self.observers: dict[str, ActObserver] = {}
        self._scales: dict[tuple, tuple[float, bool]] = {}

    def missing(self, needs: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Layers (of ``needs``: name -> observer options) whose statistics must still be observed."""
        out = [n for n, opts in needs.items() if n not in self.observers or not self.observers[n].covers(**opts)]
        self._cache._count("stats", hit=not out)
        return out

    def scale(self, key: tuple, compute: Callable[[], tuple[float, bool]]) -> tuple[float, bool]:
        """The ``(scale, signed)`` stored under ``key`` (layer, bits, rule, options), computed once."""
        got = self._scales.get(key)
        self._cache._count("scales", hit=got is not None)
        if got is None:
            got = self._scales[key] = compute()
        return got


class QuantCache:
    """Results of :func:`~amc.quantization.quantize_model` that later calls can reuse, exactly.

    A search builds one compressed model per episode from the same float model (``--mode quant``)
    or from pruned copies of it (``--mode joint``). Pass one ``QuantCache`` to every
    ``quantize_model`` (``apply_policy(..., quant_cache=)``) and each call only recomputes what it
    has not seen:

    - weight codes (:class:`QuantizedWeight` and its dequantized tensor) keyed by the hash of the
      float weight's bytes (plus dtype, shape, device) and the bits, scheme, clip, per-channel and
      k-means options; least recently used entries go beyond ``max_weight_bytes``;
    - the float-model input statistics of each calibrated layer (:class:`ActObserver`), keyed by the
      hash of the whole float model (architecture and every parameter/buffer) and of the calibration
      batches read; at most ``max_models`` models are kept;
    - the activation scale of each (layer, bits, rule) of those statistics.

    A model quantized through the cache equals one quantized without it (``amc apply``). Returned
    tensors are shared between the models built from the cache: do not modify them in place (QAT
    does not: it updates the float master weight, which makes the wrapper re-quantize).
    """

    def __init__(self, *, max_weight_bytes: int = 128 << 20, max_models: int = 16) -> None:
        if max_weight_bytes < 0 or max_models < 1:
            raise AmcError("QuantCache needs max_weight_bytes >= 0 and max_models >= 1")
        self.max_weight_bytes = int(max_weight_bytes)
        self.max_models = int(max_models)
        self._weights: OrderedDict[tuple, tuple[QuantizedWeight, torch.Tensor, int]] = OrderedDict()
        self._weight_bytes = 0
        self._stats: OrderedDict[tuple, CalibrationStats] = OrderedDict()
        self.hits = {"weights": 0, "stats": 0, "scales": 0}
        self.misses = {"weights": 0, "stats": 0, "scales": 0}

    def clear(self) -> None:
        self._weights.clear()
        self._stats.clear()
        self._weight_bytes = 0

    def info(self) -> dict[str, Any]:
        """Hit/miss counts and sizes (for logs and benchmarks)."""
        return {"hits": dict(self.hits), "misses": dict(self.misses), "weights": len(self._weights),
                "weight_bytes": self._weight_bytes, "models": len(self._stats)}

    def _count(self, kind: str, *, hit: bool) -> None:
        (self.hits if hit else self.misses)[kind] += 1

    def quantize_weight(self, m: QuantWrapper, weight_digest: bytes) -> None:
        """Give ``m`` its weight codes: the cached ones for this weight hash and options, or freshly
        computed ones (then cached). Codes loaded from a file stay the wrapper's own, uncached."""
        if m.pinned:
            m.quantized_weight()
            return
        cfg = m.config
        key = (weight_digest, m.w_bits, m.scheme, cfg.weight_clip, cfg.per_channel, cfg.kmeans_iters)
        hit = self._weights.get(key)
        self._count("weights", hit=hit is not None)
        if hit is not None:
            self._weights.move_to_end(key)
            m.use_quantized(hit[0], hit[1])
            return
        qw, deq = m.quantized_weight(), m.dequantized_weight()
        nbytes = sum(t.numel() * t.element_size() for t in (qw.codes, qw.scale, qw.centroids, deq) if t is not None)
        if nbytes > self.max_weight_bytes:
            return
        self._weights[key] = (qw, deq, nbytes)
        self._weight_bytes += nbytes
        while self._weight_bytes > self.max_weight_bytes:
            _, (_, _, n) = self._weights.popitem(last=False)
            self._weight_bytes -= n

    def calibration(self, model_digest: bytes, batches: Sequence[torch.Tensor]) -> CalibrationStats:
        """The statistics kept for the float model hashed ``model_digest`` on ``batches`` (new and
        empty the first time; the least recently used model goes beyond ``max_models``)."""
        key = (model_digest, tuple(digest(x) for x in batches))
        entry = self._stats.get(key)
        if entry is None:
            entry = self._stats[key] = CalibrationStats(self)
            while len(self._stats) > self.max_models:
                self._stats.popitem(last=False)
        else:
            self._stats.move_to_end(key)
        return entry
