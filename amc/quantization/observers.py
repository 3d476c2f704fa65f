"""Activation observers and the calibration rules that turn their statistics into a scale.

The observer keeps, per layer, the running min/max, the running mean of ``|x|`` and a histogram of
``|x|`` whose range grows by doubling (adjacent bins are merged), so that every layer's statistics
come out of a single forward pass over the calibration batches, without storing activations.

Calibration rules are looked up by name (:func:`get_calibration`): ``max``, ``percentile`` (99.99
by default), ``kl`` (TensorRT's entropy calibration) and ``mse`` (least squared error, as NVIDIA's
pytorch-quantization offers). ``QuantConfig(act_calibration="auto")`` picks KL below 5 bits and max
above. An input seen ``>= 0`` everywhere (after a ReLU) is quantized unsigned, otherwise signed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from amc.quantization.schemes import act_qrange, check_choice


class ActObserver:
    """Running statistics of one layer's input activation.

    Args:
        bins: number of histogram bins over ``[0, hist_max]`` (even; TensorRT uses 2048).
        histogram: collect the histogram of the non-zero ``|x|`` (needed by percentile/KL/MSE only).
    """

    def __init__(self, *, bins: int = 2048, histogram: bool = True, abs_mean: bool = False) -> None:
        self.bins = int(bins)
        self.histogram = histogram
        self.track_abs_mean = abs_mean
        self.min = math.inf
        self.max = -math.inf
        self.abs_max = 0.0
        self.abs_sum = 0.0
        self.count = 0
        # (bins,) float64 counts of non-zero |x|
        self.hist = torch.zeros(self.bins, dtype=torch.float64) if histogram else None
        self.hist_max = 0.0

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        lo, hi = (float(v) for v in torch.aminmax(x))
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        amax = max(abs(lo), abs(hi))
        self.abs_max = max(self.abs_max, amax)
        self.count += x.numel()
        if self.track_abs_mean:
            self.abs_sum += float(x.abs().sum())
        if not self.histogram or amax == 0.0:
            return
        if self.hist_max == 0.0:
            self.hist_max = amax
        while amax > self.hist_max:
            # double the range: merge bin pairs into the lower half, zeros above
            merged = self.hist.view(self.bins // 2, 2).sum(1)
            self.hist = torch.cat([merged, torch.zeros(self.bins // 2, dtype=torch.float64)])
            self.hist_max *= 2.0
        # |x| is x itself after a ReLU (-0.0 lands in bin 0 like 0.0): skip a pass and a copy
        h = torch.histc(x if lo >= 0.0 else x.abs(), bins=self.bins, min=0.0, max=self.hist_max).to(torch.float64)
        h[0] -= x.numel() - _count_nonzero(x)  # exact zeros (ReLU) quantize exactly: leave out
        self.hist += h

    @property
    def non_negative(self) -> bool:
        """True when every observed value was >= 0 (e.g. after a ReLU)."""
        return self.count > 0 and self.min >= 0.0

    @property
    def abs_mean(self) -> float:
        return self.abs_sum / max(self.count, 1)

    def bin_width(self) -> float:
        return self.hist_max / self.bins

    def covers(self, *, bins: int, histogram: bool, abs_mean: bool) -> bool:
        """Whether these statistics serve a layer that needs an observer made with these options."""
        return self.bins == bins and (self.histogram or not histogram) and (self.track_abs_mean or not abs_mean)


def _count_nonzero(x: torch.Tensor) -> int:
    """``torch.count_nonzero`` (NumPy's is several times faster on CPU)."""
    if x.device.type == "cpu":
        return int(np.count_nonzero(x.numpy()))
    return int(torch.count_nonzero(x))


def percentile_threshold(hist: torch.Tensor, hist_max: float, percentile: float) -> float:
    """Smallest ``t`` with at least ``percentile`` % of the ``|x|`` mass in ``[0, t]`` (bin upper edge)."""
    total = float(hist.sum())
    if total <= 0 or hist_max <= 0:
        return 0.0
    cdf = torch.cumsum(hist, 0) / total
    idx = int(torch.searchsorted(cdf, torch.tensor(percentile / 100.0, dtype=cdf.dtype)).clamp(max=len(hist) - 1))
    return (idx + 1) * hist_max / len(hist)


def _cuts(hist: torch.Tensor, first: int, max_candidates: int) -> torch.Tensor:
    """Candidate cuts (number of kept bins), evenly spaced up to the last non-empty bin."""
    nz = torch.nonzero(hist)
    stop = max(int(nz.max()) + 1 if len(nz) else 1, first)
    step = max(1, math.ceil((stop - first + 1) / max_candidates))
    cand = torch.arange(first, stop + 1, step, dtype=torch.long)
    if int(cand[-1]) != stop:
        cand = torch.cat([cand, torch.tensor([stop])])
    return cand


def _prefix_sums(*xs: torch.Tensor) -> list[torch.Tensor]:
    """The ``(B+1,)`` prefix sums, from 0, of each ``(B,)`` tensor."""
    return [torch.cat([x.new_zeros(1), torch.cumsum(x, 0)]) for x in xs]


def _level_bounds(cand: torch.Tensor, qmax: int) -> torch.Tensor:
    """``(C, qmax + 2)`` bin boundaries of the quantization levels for each cut.

    With the cut at ``i`` bins the scale is ``i / qmax`` bins per level, and bin ``j`` (centre
    ``j + 0.5``) rounds to level ``floor((j + 0.5) * qmax / i + 0.5)``: level ``g`` owns the bins
    ``[b_g, b_{g+1})`` with ``b_g = ceil((g - 0.5) * i / qmax - 0.5)``, ``b_0 = 0``, ``b_{qmax+1} = i``.
    """
    g = torch.arange(qmax + 2, dtype=torch.float64)
    i = cand.to(torch.float64)[:, None]
    b = torch.ceil((g[None, :] - 0.5) * i / qmax - 0.5)
    b = torch.minimum(b.clamp(min=0), i)
    b[:, 0] = 0
    b[:, -1] = i[:, 0]
    return b.long()


def kl_threshold(hist: torch.Tensor, hist_max: float, qmax: int, *, max_candidates: int = 512) -> float:
    """Clipping threshold minimising KL(P || Q) between the ``|x|`` histogram and its quantized
    version: the entropy calibration of TensorRT (Migacz, "8-bit inference with TensorRT", GTC 2017).

    For a cut at bin ``i`` (threshold ``i * bin_width``): P is ``hist[:i]`` with all the mass above
    folded into its last bin; Q spreads each quantization level's mass uniformly over that level's
    non-empty bins. Unlike TensorRT's fixed 128 equal groups, a level owns exactly the bins that
    round to it at scale ``threshold / qmax``, and the histogram is first merged to 16 bins per level
    (TensorRT's 2048 bins for 128 levels), which keeps the rule sound at 2-4 bits. Every candidate
    is scored at once from prefix sums: O(candidates x levels), no loop over bins.

    Args:
        hist: ``(B,)`` counts of non-zero ``|x|`` over ``[0, hist_max]`` (exact zeros excluded: they
            quantize exactly under any threshold).
        qmax: largest integer level (127 for int8, 15 for uint4).
    """
    h = hist.to(torch.float64)
    total = float(h.sum())
    if total <= 0 or hist_max <= 0 or qmax < 1:
        return 0.0
    # TensorRT's geometry, 2048 bins for 128 levels, scaled to the level count: 16 bins per level
    # over the full range. Finer bins at 2-4 bits let a spiky histogram (discrete inputs) reach a
    # near-zero divergence at a tiny cut, and push smooth ones towards too-wide clips.
    f = max(1, len(h) // (16 * (qmax + 1)))
    if f > 1:
        keep = (len(h) // f) * f
        h = h[:keep].view(-1, f).sum(1)
        hist_max = hist_max * keep / len(hist)
    B = len(h)
    cand = _cuts(h, min(qmax + 1, B), max_candidates)  # (C,)
    cs, cs_hlogh, cs_nz = _prefix_sums(h, torch.special.xlogy(h, h), (h > 0).to(torch.float64))
    b = _level_bounds(cand, qmax)  # (C, L+1)
    lo, hi = b[:, :-1], b[:, 1:]
    mass = cs[hi] - cs[lo]  # (C, L) level masses (= Q's, before normalising)
    nnz = cs_nz[hi] - cs_nz[lo]
    s_hlogh = cs_hlogh[hi] - cs_hlogh[lo]
    qtot = cs[cand]  # (C,) Q's total: the kept bins only
    # sum_j p_j log(p_j / q_j) over the kept bins with P = h / total and q_j = mass_g / (nnz_g * qtot)
    logq_level = torch.log((mass / nnz.clamp(min=1)).clamp(min=1e-300)) - torch.log(qtot.clamp(min=1e-300))[:, None]
    kl = ((s_hlogh - mass * math.log(total)) - mass * logq_level).sum(1) / total
    # correct the last kept bin, which also holds the outliers
    last = cand - 1
    h_last = h[last]
    above = total - qtot
    lvl_last = (hi > last[:, None]).to(torch.long).argmax(1)  # level owning bin i-1
    q_last = torch.where(h_last > 0, torch.exp(logq_level.gather(1, lvl_last[:, None])[:, 0]),
                         torch.full_like(h_last, 1e-10))
    log_q_last = torch.log(q_last.clamp(min=1e-10))

    def p_log_pq(p: torch.Tensor) -> torch.Tensor:  # the last bin's term of the KL sum, 0 where p = 0
        return torch.where(p > 0, p * (torch.log(p.clamp(min=1e-300)) - log_q_last), torch.zeros_like(p))

    kl = kl - p_log_pq(h_last / total) + p_log_pq((h_last + above) / total)
    return int(cand[int(torch.argmin(kl))]) * hist_max / B  # the best cut's threshold


def mse_threshold(hist: torch.Tensor, hist_max: float, qmax: int, *, max_candidates: int = 512) -> float:
    """Clipping threshold minimising the expected squared quantization error of ``|x|`` under the
    histogram (values at bin centres), with round-to-nearest onto ``qmax`` levels and clipping
    above: O(candidates x levels) from prefix sums of ``h``, ``h c`` and ``h c^2``."""
    h = hist.to(torch.float64)
    if float(h.sum()) <= 0 or hist_max <= 0 or qmax < 1:
        return 0.0
    B = len(h)
    cand = _cuts(h, 1, max_candidates)
    c = torch.arange(B, dtype=torch.float64) + 0.5  # bin centres in bin units
    s0, s1, s2 = _prefix_sums(h, h * c, h * c * c)
    b = _level_bounds(cand, qmax)
    lo, hi = b[:, :-1], b[:, 1:]
    step = cand.to(torch.float64)[:, None] / qmax  # (C, 1) bins per level
    v = torch.arange(qmax + 1, dtype=torch.float64)[None, :] * step  # (C, L) level values
    err = ((s2[hi] - s2[lo]) - 2 * v * (s1[hi] - s1[lo]) + v * v * (s0[hi] - s0[lo])).sum(1)
    top = cand.to(torch.float64)  # clipped values map to the top level, value i (bins)
    err = err + (s2[B] - s2[cand]) - 2 * top * (s1[B] - s1[cand]) + top * top * (s0[B] - s0[cand])
    return int(cand[int(torch.argmin(err))]) * hist_max / B  # the best cut's threshold


# --------------------------------------------------------------------------------------------------
# calibration rules


@dataclass(frozen=True)
class CalibrationRule:
    """A rule giving the clip threshold (float units) of an observed activation.

    Attributes:
        histogram: whether the rule reads ``obs.hist`` (observers then collect one).
        threshold: ``(observer, qmax, percentile) -> threshold``; ``qmax`` is the largest integer
            level (127 for int8, 15 for uint4); ``percentile`` is the config's, in (0, 100].
    """

    histogram: bool
    threshold: Callable[[ActObserver, int, float], float]


#: the rules by the name ``QuantConfig(act_calibration=...)`` gives them
_RULES: dict[str, CalibrationRule] = {
    "max": CalibrationRule(False, lambda o, qmax, pct: o.abs_max),
    "percentile": CalibrationRule(True, lambda o, qmax, pct: percentile_threshold(o.hist, o.hist_max, pct)),
    "kl": CalibrationRule(True, lambda o, qmax, pct: kl_threshold(o.hist, o.hist_max, qmax)),
    "mse": CalibrationRule(True, lambda o, qmax, pct: mse_threshold(o.hist, o.hist_max, qmax)),
}

#: what ``QuantConfig(act_calibration=...)`` accepts: ``auto`` and every rule
ACT_CALIBRATIONS = ("auto", *_RULES)


def get_calibration(name: str) -> CalibrationRule:
    """The rule called ``name`` (``auto`` is resolved by ``QuantConfig.act_method``)."""
    return _RULES[check_choice("activation calibration", name, tuple(_RULES))]


def scale_from_observer(obs: ActObserver, bits: int, method: str, *, percentile: float = 99.99) -> tuple[float, bool]:
    """``(scale, signed)`` of ``bits``-bit activations from ``obs`` by the rule ``method``.

    Signed 1 bit is ``{-a, +a}`` with ``a = E|x|`` (what minimises the squared error); a rule that
    finds no positive threshold falls back to ``max|x|`` (or 1 for an all-zero input).
    """
    signed = not obs.non_negative
    if signed and bits == 1:
        return max(obs.abs_mean, 1e-12), True
    _, qmax = act_qrange(bits, signed)
    t = get_calibration(method).threshold(obs, qmax, percentile)
    if not t > 0:
        t = obs.abs_max if obs.abs_max > 0 else 1.0
    return t / qmax, signed
