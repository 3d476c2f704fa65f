"""Analytic cost of a compression policy, computed without building the model.

For per-group keep ratios (and per-layer bit widths) the cost model gives MACs, parameters, weight
storage bits and BitOps. Every layer's kept input/output channels are linear in the groups' kept
fractions (``kept = fixed + sum_g n_{l,g} * k_g / T_g``), so one matrix product per call gives all
layers at once: cheap enough for the budget clipping inside every step of the search.

Units: MACs per sample; params count every ``nn.Parameter`` element (weights, biases, norm affine);
weight storage counts conv/linear *weights* only (bias and norm parameters stay in float and are
negligible), at 32 bits when a layer has no bit width. BitOps = sum_l MACs_l * w_bits_l * a_bits_l
(HAQ / "BitOps" as in Yang et al.; 32 x 32 for float).

With a per-layer weight density (fine granularity) the ``size`` metric is the honest storage of
:mod:`amc.sparse`: per layer the smallest of dense codes, a bitmask or relative indices (their
expected count for randomly placed nonzeros) plus the nonzero values, and for a quantized layer one
fp32 scale per output channel (the per-channel linear scheme :func:`amc.compress.apply_policy`
uses). A dense layer at 32 bits costs exactly what it does without a density.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch.nn as nn

from amc.errors import AmcError
from amc.graph import COMPRESSIBLE, LayerGraph

__all__ = ["CostModel", "kept_channels"]

FLOAT_BITS = 32


def kept_channels(ratio: float, total: int, round_to: int = 1) -> int:
    """Channels kept for a keep ratio: ``ceil(ratio * total)`` rounded up to a multiple of
    ``round_to`` (AMC rounds to 8), at least ``round_to`` (or 1) and at most ``total``."""
    if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
        raise AmcError(f"keep ratio {ratio} must be in (0, 1]")
    m = max(1, int(round_to))
    k = math.ceil(ratio * total / m - 1e-6) * m
    return int(min(total, max(min(m, total), k)))


class CostModel:
    """Costs of a policy on the model described by ``graph``.

    ``keep`` arguments are per-group keep ratios in (0, 1] (``len(graph.groups)``), or ``None`` for the
    unpruned model. ``w_bits`` / ``a_bits`` are per-layer bit widths (``len(graph.layers)``, or a
    mapping by layer name); ``None`` entries mean 32-bit float.
    """

    def __init__(self, graph: LayerGraph, model: nn.Module | None = None, *, round_to: int = 1) -> None:
        self.graph = graph
        self.round_to = max(1, int(round_to))
        layers, groups = graph.layers, graph.groups
        nl, ng = len(layers), len(groups)
        index = {ly.name: ly.index for ly in layers}
        self.totals = np.array([g.channels for g in groups], dtype=np.float64)
        # rounding per group, in its units (slots of grouped convs): kept channels are multiples of round_to
        self.steps = [g.slot_round_to(self.round_to) for g in groups]
        a_out, a_in = np.zeros((nl, ng)), np.zeros((nl, ng))
        for g in groups:
            for it in g.items:
                if it.module in index:
                    (a_out if it.dim == "out" else a_in)[index[it.module], g.index] += len(it.idxs)
        self._a_out, self._a_in = a_out, a_in
        self._out_total = np.array([ly.out_channels for ly in layers], dtype=np.float64)
        self._in_total = np.array([ly.in_channels for ly in layers], dtype=np.float64)
        self._fixed_out = self._out_total - a_out.sum(1)
        self._fixed_in = self._in_total - a_in.sum(1)
        self._depthwise = np.array([ly.kind == "depthwise" for ly in layers])
        # per output channel x input channel (conv: kh*kw*H*W/groups), so MACs = coef * out * in
        hw = np.array([ly.out_size[0] * ly.out_size[1] for ly in layers], dtype=np.float64)
        kk = np.array([ly.kernel[0] * ly.kernel[1] for ly in layers], dtype=np.float64)
        groups_ = np.array([ly.groups for ly in layers], dtype=np.float64)
        positions = np.array([ly.macs / (ly.out_channels * ly.in_channels) if ly.kind == "linear" else 1.0
                              for ly in layers])
        self._mac_coef = np.where(self._depthwise, kk * hw, kk * hw / groups_ * positions)
        self._w_coef = np.where(self._depthwise, kk, kk / groups_)
        self._bias = np.array([ly.params - ly.weight_params > 0 for ly in layers], dtype=np.float64)
        self.base_macs = float(graph.total_macs)
        self.base_weight_params = float(sum(ly.weight_params for ly in layers))
        # non-conv/linear parameters (norm layers ...) that follow a group's channels
        self._other_fixed = 0.0
        self._other_per_group = np.zeros(ng)
        if model is not None:
            modules = dict(model.named_modules())
            # per (module, group): a norm layer after a concatenation follows several groups
            counted: set[tuple[str, int]] = set()
            for g in groups:
                for it in g.items:
                    m = modules.get(it.module)
                    if m is None or isinstance(m, COMPRESSIBLE) or (it.module, g.index) in counted:
                        continue
                    direct = [p for p in m.parameters(recurse=False) if p.dim() >= 1]
                    if not direct:
                        continue
                    counted.add((it.module, g.index))
                    n = direct[0].shape[0]
                    per_channel = sum(p.numel() / n for p in direct if p.shape[0] == n)
                    self._other_per_group[g.index] += per_channel * len(it.idxs)
            total_params = sum(p.numel() for p in model.parameters())
            layer_params = sum(ly.params for ly in layers)
            # everything that no group touches stays as it is
            self._other_fixed = total_params - layer_params - self._other_per_group.sum()
        self.base_params = self.params(None) if model is not None else float(sum(ly.params for ly in layers))

    # ----------------------------------------------------------------- inputs
    def channels(self, keep: Sequence[float] | None) -> np.ndarray:
        """Kept channels per group after rounding."""
        if keep is None:
            return self.totals.astype(np.int64)
        keep = list(keep)
        if len(keep) != len(self.totals):
            raise AmcError(f"policy has {len(keep)} keep ratios but the model has {len(self.totals)} prunable groups")
        return np.array([kept_channels(float(r), int(t), s) for r, t, s in zip(keep, self.totals, self.steps)],
                        dtype=np.int64)

    def fractions(self, keep: Sequence[float] | None) -> np.ndarray:
        """Kept fraction per group (``kept / total`` after rounding; ones for ``None``)."""
        return self.channels(keep) / self.totals

    def _bits(self, bits: Sequence[int | None] | Mapping[str, int | None] | None) -> np.ndarray:
        n = len(self.graph.layers)
        if bits is None:
            return np.full(n, float(FLOAT_BITS))
        if isinstance(bits, Mapping):
            bits = [bits.get(ly.name) for ly in self.graph.layers]
        bits = list(bits)
        if len(bits) != n:
            raise AmcError(f"{len(bits)} bit widths given for {n} layers")
        return np.array([FLOAT_BITS if b is None else float(b) for b in bits])

    # ----------------------------------------------------------------- per layer
    def layer_channels(self, keep: Sequence[float] | None = None, *, fractions: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(kept input channels, kept output channels) per layer."""
        q = self.fractions(keep) if fractions is None else fractions
        out = self._fixed_out + self._a_out @ q
        inn = np.where(self._depthwise, out, self._fixed_in + self._a_in @ q)
        return inn, out

    def layer_macs(self, keep: Sequence[float] | None = None, *, fractions: np.ndarray | None = None) -> np.ndarray:
        inn, out = self.layer_channels(keep, fractions=fractions)
        return np.where(self._depthwise, out * self._mac_coef, out * inn * self._mac_coef)

    def layer_weight_params(self, keep: Sequence[float] | None = None, *,
                            fractions: np.ndarray | None = None) -> np.ndarray:
        inn, out = self.layer_channels(keep, fractions=fractions)
        return np.where(self._depthwise, out * self._w_coef, out * inn * self._w_coef)

    # ----------------------------------------------------------------- totals
    def macs(self, keep: Sequence[float] | None = None, *, fractions: np.ndarray | None = None) -> float:
        return float(self.layer_macs(keep, fractions=fractions).sum())

    def params(self, keep: Sequence[float] | None = None, *, fractions: np.ndarray | None = None) -> float:
        q = self.fractions(keep) if fractions is None else fractions
        _, out = self.layer_channels(fractions=q)
        w = self.layer_weight_params(fractions=q)
        return float(w.sum() + (self._bias * out).sum() + self._other_per_group @ q + self._other_fixed)

    def size_bits(self, keep: Sequence[float] | None = None, w_bits=None, *,
                  fractions: np.ndarray | None = None) -> float:
        """Weight storage in bits: sum_l weight elements_l x w_bits_l."""
        return float((self.layer_weight_params(keep, fractions=fractions) * self._bits(w_bits)).sum())

    def bitops(self, keep: Sequence[float] | None = None, w_bits=None, a_bits=None, *,
               fractions: np.ndarray | None = None) -> float:
        """sum_l MACs_l x w_bits_l x a_bits_l (float layers count 32 x 32)."""
        return float((self.layer_macs(keep, fractions=fractions) * self._bits(w_bits) * self._bits(a_bits)).sum())

    def metric(self, name: str, *, fractions: np.ndarray, density: np.ndarray | None = None,
               w_bits: np.ndarray | None = None, a_bits: np.ndarray | None = None) -> float:
        """One budget metric (``macs``, ``params``, ``size``, ``bitops``) of a state given as arrays:
        kept fraction per group, weight density per layer (unstructured sparsity; ``None`` = dense)
        and per-layer bits (``None`` = 32). With a density, ``params`` counts the remaining weights
        plus every non-weight parameter."""
        if name == "macs":
            return self.macs(fractions=fractions)
        if name == "params":
            if density is None:
                return self.params(fractions=fractions)
            return float(self.base_params - self.base_weight_params
                         + (density * self.layer_weight_params(fractions=fractions)).sum())
        wb = self._bits(None) if w_bits is None else w_bits
        if name == "size":
            numel = self.layer_weight_params(fractions=fractions)
            if density is None:
                return float((numel * wb).sum())
            from amc.sparse import sparse_bits_array

            scales = np.where(np.asarray(wb) < FLOAT_BITS, self.layer_channels(fractions=fractions)[1] * FLOAT_BITS, 0.0)
            return float((sparse_bits_array(numel, density, wb) + scales).sum())
        if name == "bitops":
            ab = self._bits(None) if a_bits is None else a_bits
            return float((self.layer_macs(fractions=fractions) * wb * ab).sum())
        raise AmcError(f"unknown cost metric {name!r}; valid: macs, params, size, bitops")

    @property
    def base_size_bits(self) -> float:
        return self.base_weight_params * FLOAT_BITS

    @property
    def base_bitops(self) -> float:
        return self.base_macs * FLOAT_BITS * FLOAT_BITS

    def ratios(self, keep: Sequence[float] | None = None, w_bits=None, a_bits=None) -> dict[str, float]:
        """Every cost as a fraction of the uncompressed float32 model."""
        q = self.fractions(keep)
        return {
            "macs_ratio": self.macs(fractions=q) / self.base_macs,
            "params_ratio": self.params(fractions=q) / self.base_params,
            "size_ratio": self.size_bits(w_bits=w_bits, fractions=q) / self.base_size_bits,
            "bitops_ratio": self.bitops(w_bits=w_bits, a_bits=a_bits, fractions=q) / self.base_bitops,
        }
