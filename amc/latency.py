"""Measured latency, and a per-layer latency table that predicts a policy's latency without timing it.

Measurement protocol (:func:`measure_latency`): fixed thread count and batch size, warm-up runs, then
the median of repeated timed runs, by ``torch.utils.benchmark.Timer`` (which synchronises CUDA). Medians resist the
noise of shared machines; still, compare timings only from one run on one machine.

:class:`LatencyTable` times every compressible layer alone (convolution, or linear) at a grid of
kept input/output channel counts on the target device, and predicts a policy's latency as the sum of
bilinear interpolations plus the part of the model the layers do not explain (activations, norms,
pooling, adds: measured once as ``full model - sum of layers``, scaled by the MACs ratio). This is
how a latency budget is enforced during the search without timing every candidate (AMC Sec. 3.3,
HAQ's lookup table). It is a model: the benchmark ``scripts/bench_latency.py`` prints predicted vs
measured latency of real pruned models.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.graph import LayerGraph
from amc.utils import atomic_write_json, resolve_device

__all__ = ["LatencyResult", "measure_latency", "LatencyTable", "fixed_threads"]


@dataclass
class LatencyResult:
    """Latency of one forward pass of a whole batch, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    batch_size: int
    threads: int
    repeats: int
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def fixed_threads(threads: int | None):
    """Run with ``torch.set_num_threads(threads)`` and restore the previous count afterwards."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1, threads: int | None = None,
                    warmup: int = 10, repeats: int = 50, device: str | torch.device = "cpu",
                    min_time_s: float = 0.0) -> LatencyResult:
    """Median latency of ``model`` on a random input ``(batch_size, *input_shape)``.

    ``input_shape`` is one sample's shape ``(C, H, W)``. The model is put in eval mode on ``device``.
    Timed with ``torch.utils.benchmark.Timer``: ``warmup`` runs, then blocks of runs for at least
    ``repeats`` runs' worth of time and at least ``min_time_s`` (for sub-millisecond layers). A block
    holds one run for whole models and many for tiny layers (the Timer sizes them above its clock's
    resolution); the median, p10 and p90 are over the blocks' per-run times.
    """
    if batch_size < 1 or repeats < 1:
        raise AmcError(f"batch_size and repeats must be >= 1, got {batch_size}, {repeats}")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    x = torch.randn(batch_size, *input_shape, device=dev)
    n_threads = int(threads) if threads else torch.get_num_threads()
    logger = logging.getLogger("torch.utils.cpp_extension")  # a CUDA_HOME notice on CPU-only machines
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer  # it synchronises CUDA around each block
    finally:
        logger.setLevel(level)
    timer = Timer("model(x)", globals={"model": model, "x": x}, num_threads=n_threads)
    per_run = timer.timeit(max(warmup, 1)).mean  # also the warm-up
    m = timer.blocked_autorange(min_run_time=max(min_time_s, repeats * per_run))
    times = np.asarray(m.times) * 1000.0
    q = np.percentile(times, [10, 90])
    return LatencyResult(float(np.median(times)), float(q[0]), float(q[1]), float(times.mean()), batch_size,
                         n_threads, int(m.number_per_run * len(m.raw_times)), str(dev))


def _standalone(layer: nn.Module, in_ch: int, out_ch: int) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return nn.Linear(in_ch, out_ch, bias=layer.bias is not None)
    groups = layer.groups
    if groups == layer.in_channels and groups > 1:  # depthwise follows its channels
        groups = in_ch = out_ch = min(in_ch, out_ch)
    return nn.Conv2d(in_ch, out_ch, layer.kernel_size, layer.stride, layer.padding, layer.dilation, groups,
                     bias=layer.bias is not None)


class LatencyTable:
    """Per-layer latency (ms) on a grid of kept input x output channel fractions.

    Build with :meth:`build` (times every layer: seconds to a minute for CIFAR models on a CPU), save
    with :meth:`save` and reuse with :meth:`load`; :meth:`predict` takes kept channels per layer.
    """

    def __init__(self, layers: list[str], grid: list[float], table: np.ndarray, in_total: np.ndarray,
                 out_total: np.ndarray, overhead_ms: float, meta: dict) -> None:
        self.layers = layers
        self.grid = np.asarray(grid, dtype=np.float64)
        self.table = np.asarray(table, dtype=np.float64)  # (L, G, G): [layer, in index, out index]
        self.in_total = np.asarray(in_total, dtype=np.float64)
        self.out_total = np.asarray(out_total, dtype=np.float64)
        self.overhead_ms = float(overhead_ms)
        self.meta = meta

    @classmethod
    def build(cls, model: nn.Module, graph: LayerGraph, *, batch_size: int = 1, threads: int | None = None,
              device: str | torch.device = "cpu", grid: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
              repeats: int = 20, warmup: int = 5) -> LatencyTable:
        modules = dict(model.named_modules())
        grid = sorted(float(g) for g in grid)
        if grid[-1] != 1.0:
            grid.append(1.0)
        table = np.zeros((len(graph.layers), len(grid), len(grid)))
        for li, ly in enumerate(graph.layers):
            layer = modules[ly.name]
            hw = () if ly.kind == "linear" else tuple(ly.in_size)  # a linear layer's input is (N, C)
            for (i, fi), (j, fo) in itertools.product(enumerate(grid), repeat=2):
                if ly.kind == "depthwise" and i != j:
                    continue
                cin = max(1, round(fi * ly.in_channels))
                m = _standalone(layer, cin, max(1, round(fo * ly.out_channels)))
                if ly.kind == "depthwise":
                    cin = m.in_channels
                table[li, i, j] = measure_latency(m, (cin, *hw), batch_size=batch_size, threads=threads,
                                                  warmup=warmup, repeats=repeats, device=device).median_ms
            if ly.kind == "depthwise":  # depthwise: in == out, fill the grid from its diagonal
                diag = np.diag(table[li]).copy()
                table[li] = np.maximum.outer(diag, diag)
        c, h, w = graph.example_shape[1:]
        full = measure_latency(model, (c, h, w), batch_size=batch_size, threads=threads, device=device,
                               repeats=max(repeats, 20)).median_ms
        overhead = max(0.0, full - float(table[:, -1, -1].sum()))
        meta = {"batch_size": batch_size, "threads": threads or torch.get_num_threads(), "device": str(device),
                "full_model_ms": full, "input_shape": [c, h, w]}
        return cls([ly.name for ly in graph.layers], grid, table,
                   np.array([ly.in_channels for ly in graph.layers]), np.array([ly.out_channels for ly in graph.layers]),
                   overhead, meta)

    def predict(self, in_kept: Sequence[float], out_kept: Sequence[float]) -> float:
        """Predicted latency (ms) for the kept input/output channels of every layer (graph order): the
        bilinear interpolation of each layer's grid."""
        g, t, n = self.grid, self.table, np.arange(len(self.layers))
        fo = np.asarray(out_kept, dtype=np.float64) / self.out_total
        fi = np.clip(np.asarray(in_kept, dtype=np.float64) / self.in_total, g[0], 1.0)
        fc = np.clip(fo, g[0], 1.0)
        i = np.clip(np.searchsorted(g, fi) - 1, 0, len(g) - 2)
        j = np.clip(np.searchsorted(g, fc) - 1, 0, len(g) - 2)
        u, v = (fi - g[i]) / (g[i + 1] - g[i]), (fc - g[j]) / (g[j + 1] - g[j])
        layers = ((1 - u) * (1 - v) * t[n, i, j] + u * (1 - v) * t[n, i + 1, j] + (1 - u) * v * t[n, i, j + 1]
                  + u * v * t[n, i + 1, j + 1]).sum()
        # the rest (activations, norms, adds) scales roughly with the channels that flow
        return float(layers) + self.overhead_ms * float(np.mean(fo))

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, {"format": "amc-latency-table", "version": 1, "layers": self.layers,
                                        "grid": self.grid.tolist(), "table": self.table.tolist(),
                                        "in_total": self.in_total.tolist(), "out_total": self.out_total.tolist(),
                                        "overhead_ms": self.overhead_ms, "meta": self.meta})

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        p = Path(path)
        if not p.is_file():
            raise AmcError(f"latency table {str(p)!r} does not exist")
        d = json.loads(p.read_text())
        if d.get("format") != "amc-latency-table":
            raise AmcError(f"{str(p)!r} is not an amc latency table")
        return cls(d["layers"], d["grid"], np.array(d["table"]), np.array(d["in_total"]), np.array(d["out_total"]),
                   d["overhead_ms"], d.get("meta", {}))
