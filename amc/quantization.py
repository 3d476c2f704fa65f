"""Per-layer mixed-precision quantization: simulated (fake) quantization with a straight-through
estimator, activation calibration, and honest storage of the quantized weights.

Conventions (HAQ, Wang et al. CVPR 2019, arXiv 1811.08886, section 3):

- A layer's *activation bits* are the bits of its **input**: ``a_bits["conv2"] = 4`` quantizes the
  tensor that enters ``conv2``. HAQ keeps the first layer's input unquantized and runs the first
  layer W8 and the last W8A8 (see :func:`first_last_layers` and :func:`pin_first_last`).
- Bits are an int in 1..8; ``None`` or 32 means float (no quantization).
- Weights are quantized symmetrically, per output channel by default, with one of four schemes:

  ========== ========================================================================= =========
  scheme     values                                                                    bits
  ========== ========================================================================= =========
  linear     ``s * {-(2^(b-1)-1) .. 2^(b-1)-1}`` (1 bit: same as binary)                 1..8
  binary     ``{-a, +a}``, ``a = mean|w|`` (XNOR-Net, Rastegari et al. 2016)            1
  ternary    ``{-a, 0, +a}``, threshold ``0.7 mean|w|`` (TWN, Li & Liu 2016, eq. 9-10)   2
  kmeans     ``2^b`` shared centroids per layer, linear init, Lloyd iterations           1..8
             (Deep Compression, Han et al. ICLR 2016, section 3)
  ========== ========================================================================= =========

  The linear scale clips at ``max|w|`` or, with ``weight_clip="mse"`` (default below 5 bits), at
  the per-channel clip that minimises the squared error (HAQ clips weights too, by KL).
- Activations use one per-tensor scale from calibration: ``max``, ``percentile`` (99.99 by
  default), ``kl`` (TensorRT's entropy calibration) or ``mse`` (least squared error, as NVIDIA's
  pytorch-quantization offers); ``auto`` picks KL below 5 bits and max above.
  An input that calibration sees ``>= 0`` everywhere (after a ReLU) is quantized unsigned
  (``[0, 2^b-1]``), otherwise signed (``[-(2^(b-1)-1), 2^(b-1)-1]``; 1 bit: ``{-a, +a}``).
- Calibration observes the **float** model: during the calibration pass every layer runs with its
  float weight and float input, so a layer's activation range depends on the float model and the
  calibration images only, never on the bits chosen for the other layers. This is what HAQ's
  ``calibrate`` does (its ``QModule`` in calibrate mode returns both the input and the weight
  unquantized) and what PyTorch's post-training quantization does (observers on the float model),
  and it is what makes a search cheap: the statistics are gathered once per distinct float model
  and reused by every policy (:class:`QuantCache`), instead of one calibration pass per episode.

Straight-through estimator: the gradient w.r.t. the float master weight passes straight through
(``w + (q(w) - w).detach()``); inputs use :func:`torch.fake_quantize_per_tensor_affine`, whose
gradient is 1 inside the clip range and 0 outside. The quantized weight is cached and recomputed
only when the float weight changes (every optimizer step in QAT; never while evaluating), so that
the search's ``quantize_model`` + evaluate loop pays for weight quantization once per call.

Across calls, a :class:`QuantCache` passed to :func:`quantize_model` keeps the weight codes, the
float-model activation statistics and the activation scales, keyed by a hash of the exact bytes
they were computed from (weights, the whole float state and architecture, the calibration
batches), so a hit returns what a fresh computation would: the search passes one and
``amc apply`` (no cache) rebuilds the very same model.

Storage (:func:`pack_model`, :func:`save_packed`, :func:`load_packed`): weight codes bit-packed
into one byte stream, fp32 per-channel scales (and k-means centroids), everything else (biases,
BN, activation scales) in fp32 (or fp16), so that the file is the computed weight storage plus a
small overhead. :func:`huffman_size_bits` gives what Huffman coding of the codes would reach, as
Deep Compression reports; the file itself stores fixed-length codes.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import logging
import math
import numbers
import os
import pickle
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from amc._quant_calib import ActObserver, kl_threshold, mse_threshold, percentile_threshold
from amc._quant_pack import huffman_bits, pack_bits, unpack_bits
from amc.errors import AmcError
from amc.utils import atomic_torch_save, model_device

__all__ = [
    "ACT_CALIBRATIONS",
    "WEIGHT_CLIPS",
    "WEIGHT_SCHEMES",
    "QuantCache",
    "QuantConfig",
    "QuantWrapper",
    "QuantizedWeight",
    "activation_quantization_error",
    "activation_scale",
    "calibrate",
    "check_bits",
    "fake_quant_activation",
    "first_last_layers",
    "huffman_size_bits",
    "load_packed",
    "pack_model",
    "pin_first_last",
    "quantization_error",
    "quantize_model",
    "quantize_weight",
    "quantize_weight_codes",
    "quantized_layers",
    "save_packed",
    "unpack_model",
    "weight_quantization_error",
    "weight_storage_bits",
]

logger = logging.getLogger(__name__)

WEIGHT_SCHEMES = ("linear", "binary", "ternary", "kmeans")
ACT_CALIBRATIONS = ("auto", "max", "percentile", "kl", "mse")
_HIST_METHODS = ("percentile", "kl", "mse")
WEIGHT_CLIPS = ("auto", "max", "mse")
FLOAT_BITS = 32
PACKED_FORMAT = "amc-packed-model"
PACKED_VERSION = 1

_SCHEME_FIXED_BITS = {"binary": 1, "ternary": 2}
_LOW_BITS = 5  # "auto" rules switch below this many bits


# --------------------------------------------------------------------------------------------------
# config and validation


@dataclass
class QuantConfig:
    """How weights and activations are quantized (the bits themselves come per layer).

    Attributes:
        per_channel: one weight scale per output channel (else one per layer). k-means always
            shares one codebook per layer.
        weight_scheme: ``linear`` | ``binary`` (1 bit) | ``ternary`` (2 bits) | ``kmeans``.
        weight_clip: linear scheme's clip: ``max`` (``max|w|``), ``mse`` (per-channel clip ratio in
            (0, 1] minimising the squared error) or ``auto`` (mse below 5 bits, max otherwise).
        act_calibration: ``max`` | ``percentile`` | ``kl`` | ``mse`` | ``auto`` (kl below
            ``kl_below_bits`` bits, max otherwise).
        percentile: percentile of the non-zero ``|x|`` kept by the ``percentile`` rule, in (0, 100].
        kl_below_bits: ``auto`` uses KL for activation bits strictly below this (HAQ-style 5).
        hist_bins: histogram bins of ``|x|`` for percentile/KL/MSE (even, >= 16; TensorRT: 2048).
        kmeans_iters: Lloyd iterations of the k-means weight sharing (>= 1).
        calibration_batches: at most this many calibration batches are read (>= 1).
    """

    per_channel: bool = True
    weight_scheme: str = "linear"
    weight_clip: str = "auto"
    act_calibration: str = "auto"
    percentile: float = 99.99
    kl_below_bits: int = _LOW_BITS
    hist_bins: int = 2048
    kmeans_iters: int = 10
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        self.weight_scheme = _check_choice("weight_scheme", self.weight_scheme, WEIGHT_SCHEMES)
        self.weight_clip = _check_choice("weight_clip", self.weight_clip, WEIGHT_CLIPS)
        self.act_calibration = _check_choice("act_calibration", self.act_calibration, ACT_CALIBRATIONS)
        if not (0.0 < float(self.percentile) <= 100.0):
            raise AmcError(f"percentile must be in (0, 100], e.g. 99.99; got {self.percentile!r}")
        self.percentile = float(self.percentile)
        for name, lo in (("kl_below_bits", 1), ("kmeans_iters", 1), ("calibration_batches", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise AmcError(f"{name} must be an int >= {lo}, got {v!r}")
            setattr(self, name, int(v))
        b = self.hist_bins
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 16 or b % 2:
            raise AmcError(f"hist_bins must be an even int >= 16 (2048 is TensorRT's choice), got {b!r}")
        self.hist_bins = int(b)
        self.per_channel = bool(self.per_channel)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantConfig:
        valid = set(cls.__dataclass_fields__)
        unknown = set(d) - valid
        if unknown:
            raise AmcError(f"unknown quantization options {sorted(unknown)}; valid: {', '.join(sorted(valid))}")
        return cls(**dict(d))

    def act_method(self, bits: int) -> str:
        """The calibration rule used for ``bits``-bit activations (resolves ``auto``)."""
        if self.act_calibration != "auto":
            return self.act_calibration
        return "kl" if bits < self.kl_below_bits else "max"


def _check_choice(what: str, value: Any, valid: tuple[str, ...]) -> str:
    v = str(value).lower()
    if v not in valid:
        raise AmcError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return v


def check_bits(bits: Any, *, layer: str = "?", kind: str = "weight") -> int | None:
    """Validate one bit width: an int in 1..8, or ``None``/32 for float (returned as ``None``).

    Raises :class:`AmcError` naming the layer and the bad value.
    """
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        if isinstance(bits, float) and bits.is_integer():
            bits = int(bits)
        else:
            raise AmcError(f"layer {layer!r}: {kind} bits must be an int in 1..8, or None/32 for float; "
                           f"got {bits!r}")
    bits = int(bits)
    if bits == FLOAT_BITS:
        return None
    if not 1 <= bits <= 8:
        raise AmcError(f"layer {layer!r}: {kind} bits must be in 1..8 (or None/32 for float); got {bits}")
    return bits


def _check_scheme_bits(scheme: str, bits: int, layer: str) -> None:
    need = _SCHEME_FIXED_BITS.get(scheme)
    if need is not None and bits != need:
        raise AmcError(f"layer {layer!r}: the {scheme} weight scheme stores {need} bit(s) per weight, but "
                       f"w_bits is {bits}; pass w_bits={need} for it, or scheme 'linear'/'kmeans' for "
                       f"{bits}-bit weights (quantize_model(..., schemes={{{layer!r}: 'linear'}}))")


# --------------------------------------------------------------------------------------------------
# weights


@dataclass
class QuantizedWeight:
    """Integer codes of one weight tensor and what turns them back into floats.

    Attributes:
        codes: ``uint8`` tensor of the weight's shape, values in ``[0, 2**bits)``.
        scale: ``(C,)`` float32 per output channel, or ``(1,)`` per layer; ``None`` for k-means.
        bits: bits per code (1..8).
        scheme: ``linear`` (code ``c`` means ``(c - qmax) * s``), ``binary`` (``(2c - 1) * s``),
            ``ternary`` (``(c - 1) * s``) or ``kmeans`` (``centroids[c]``).
        centroids: ``(2**bits,)`` float32 codebook of k-means.
    """

    codes: torch.Tensor
    scale: torch.Tensor | None
    bits: int
    scheme: str
    centroids: torch.Tensor | None = None

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        c = self.codes
        if self.scheme == "kmeans":
            return self.centroids.to(dtype)[c.long()]
        s = self.scale.to(dtype).view(-1, *([1] * (c.dim() - 1)))
        if self.scheme == "linear":
            q = c.to(dtype) - float(2 ** (self.bits - 1) - 1)
        elif self.scheme == "binary":
            q = c.to(dtype) * 2.0 - 1.0
        else:  # ternary
            q = c.to(dtype) - 1.0
        return q * s


def _channels(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    return w.reshape(w.shape[0], -1) if (per_channel and w.dim() > 1) else w.reshape(1, -1)  # (C, K)


def _linear_codes(flat: torch.Tensor, bits: int, clip: str) -> tuple[torch.Tensor, torch.Tensor]:
    qmax = 2 ** (bits - 1) - 1
    amax = flat.abs().amax(1)  # (C,)
    if clip == "mse":
        ratio = _mse_clip_ratio(flat, amax, qmax)
    else:
        ratio = torch.ones_like(amax)
    scale = amax * ratio / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero channel: any scale
    q = torch.clamp(torch.round(flat / scale[:, None]), -qmax, qmax)
    return (q + qmax).to(torch.uint8), scale


def _mse_clip_ratio(flat: torch.Tensor, amax: torch.Tensor, qmax: int) -> torch.Tensor:
    """Per-row clip ratio in (0, 1] minimising the squared quantization error: a coarse grid of 16
    ratios, then 8 finer ones around each row's best. Candidates are scored in batches of
    ``(R, C, K)`` (at most ~4M elements at once), so a layer costs a handful of tensor ops."""

    def errors(ratios: torch.Tensor) -> torch.Tensor:  # (R, C) ratios -> (R, C) squared errors
        out = torch.empty_like(ratios)
        step = max(1, (1 << 22) // max(flat.numel(), 1))
        for i in range(0, ratios.shape[0], step):
            r = ratios[i:i + step]
            s = (amax[None, :] * r / qmax).clamp(min=1e-12)[..., None]  # (r, C, 1)
            q = torch.clamp(torch.round(flat[None] / s), -qmax, qmax) * s  # (r, C, K)
            out[i:i + step] = (q - flat[None]).pow(2).sum(-1)
        return out

    C = flat.shape[0]
    coarse = torch.linspace(0.1, 1.0, 16, dtype=flat.dtype, device=flat.device)  # (16,)
    cand = coarse[:, None].expand(16, C)
    err = errors(cand)
    best = cand.gather(0, err.argmin(0, keepdim=True))[0]  # (C,)
    d = float(coarse[1] - coarse[0])
    offsets = torch.linspace(-d, d, 10, dtype=flat.dtype, device=flat.device)[1:-1]  # (8,)
    fine = (best[None, :] + offsets[:, None]).clamp(0.02, 1.0)  # (8, C)
    cand = torch.cat([best[None, :], fine])
    err = errors(cand)
    return cand.gather(0, err.argmin(0, keepdim=True))[0]


def _kmeans_codes(w: torch.Tensor, bits: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means (Lloyd) with ``2**bits`` centroids initialised linearly over ``[min w, max w]``
    (Deep Compression's best init, section 3.2). In 1-D the centroids stay sorted, so assignment is a
    ``bucketize`` against the midpoints: O(n log k) instead of an (n, k) distance matrix."""
    flat = w.reshape(-1)
    k = 2**bits
    lo, hi = float(flat.min()), float(flat.max())
    cent = torch.linspace(lo, hi, k, dtype=flat.dtype, device=flat.device)
    idx = None
    for _ in range(iters):
        new_idx = torch.bucketize(flat, (cent[1:] + cent[:-1]) / 2)
        if idx is not None and torch.equal(new_idx, idx):
            break
        idx = new_idx
        sums = torch.zeros(k, dtype=flat.dtype, device=flat.device).index_add_(0, idx, flat)
        counts = torch.bincount(idx, minlength=k).to(flat.dtype)
        cent = torch.where(counts > 0, sums / counts.clamp(min=1), cent)
    idx = torch.bucketize(flat, (cent[1:] + cent[:-1]) / 2)
    return idx.to(torch.uint8).reshape(w.shape), cent.float()


def quantize_weight_codes(
    w: torch.Tensor,
    bits: int,
    *,
    per_channel: bool = True,
    scheme: str = "linear",
    clip: str = "auto",
    kmeans_iters: int = 10,
) -> QuantizedWeight:
    """Quantize a weight tensor ``(C_out, ...)`` to integer codes (see :class:`QuantizedWeight`).

    Args:
        bits: 1..8 (``binary`` needs 1, ``ternary`` 2).
        per_channel: one scale per output channel (dim 0); ignored by ``kmeans`` (one codebook).
        scheme: ``linear`` | ``binary`` | ``ternary`` | ``kmeans``.
        clip: ``linear`` only: ``max`` | ``mse`` | ``auto`` (mse below 5 bits).
    """
    scheme = _check_choice("weight scheme", scheme, WEIGHT_SCHEMES)
    clip = _check_choice("weight clip", clip, WEIGHT_CLIPS)
    b = check_bits(bits, kind="weight")
    if b is None:
        raise AmcError("quantize_weight_codes needs bits in 1..8; float weights have no codes")
    _check_scheme_bits(scheme, b, "?")
    with torch.no_grad():
        w = w.detach().float()
        if scheme == "kmeans":
            codes, cent = _kmeans_codes(w, b, kmeans_iters)
            return QuantizedWeight(codes, None, b, "kmeans", cent)
        flat = _channels(w, per_channel)  # (C, K)
        if scheme == "binary" or (scheme == "linear" and b == 1):
            scale = flat.abs().mean(1)
            codes = (flat >= 0).to(torch.uint8)
            return QuantizedWeight(codes.reshape(w.shape), scale, 1, "binary")
        if scheme == "ternary":
            a = flat.abs()
            delta = 0.7 * a.mean(1, keepdim=True)  # TWN eq. 10
            mask = a > delta
            n = mask.sum(1).clamp(min=1)
            scale = (a * mask).sum(1) / n  # alpha: mean |w| above the threshold (TWN eq. 9)
            codes = (torch.sign(flat) * mask + 1).to(torch.uint8)
            return QuantizedWeight(codes.reshape(w.shape), scale, 2, "ternary")
        if clip == "auto":
            clip = "mse" if b < _LOW_BITS else "max"
        codes, scale = _linear_codes(flat, b, clip)
        return QuantizedWeight(codes.reshape(w.shape), scale, b, "linear")


def quantize_weight(
    w: torch.Tensor,
    bits: int | None,
    *,
    per_channel: bool = True,
    scheme: str = "linear",
    clip: str = "auto",
    kmeans_iters: int = 10,
) -> torch.Tensor:
    """Fake-quantized copy of ``w`` (float, same shape); ``bits`` None/32 returns ``w``.

    Differentiable by the straight-through estimator: the gradient w.r.t. ``w`` is the identity.
    """
    b = check_bits(bits, kind="weight")
    if b is None:
        return w
    qw = quantize_weight_codes(w, b, per_channel=per_channel, scheme=scheme, clip=clip,
                               kmeans_iters=kmeans_iters)
    deq = qw.dequantize(w.dtype if w.is_floating_point() else torch.float32)
    if w.requires_grad and torch.is_grad_enabled():
        return w + (deq - w).detach()
    return deq


# --------------------------------------------------------------------------------------------------
# activations


def _act_qrange(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def fake_quant_activation(x: torch.Tensor, bits: int | None, scale: float | torch.Tensor, signed: bool) -> torch.Tensor:
    """Fake-quantize ``x`` with one per-tensor ``scale`` (float units per integer step).

    Unsigned: ``[0, 2^b-1] * scale``; signed: ``[-(2^(b-1)-1), 2^(b-1)-1] * scale``; signed 1 bit:
    ``{-scale, +scale}``. The gradient passes straight through inside the clip range, 0 outside.
    """
    b = check_bits(bits, kind="activation")
    if b is None:
        return x
    s = float(scale)
    if not s > 0 or not math.isfinite(s):
        raise AmcError(f"activation scale must be a positive finite number, got {s}; calibrate first")
    if signed and b == 1:
        xq = torch.where(x >= 0, torch.full_like(x, s), torch.full_like(x, -s))
        xc = x.clamp(-s, s)
        return xq.detach() + (xc - xc.detach())
    lo, hi = _act_qrange(b, signed)
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.fake_quantize_per_tensor_affine(x, s, 0, lo, hi)
    # no gradient wanted: the fused op still builds its gradient mask and is ~10x slower on CPU
    # than these in-place passes, which give the same values (x * (1/s), round half to even)
    return x.mul(1.0 / s).round_().clamp_(lo, hi).mul_(s)


def _scale_from_observer(obs: ActObserver, bits: int, method: str, cfg: QuantConfig) -> tuple[float, bool]:
    signed = not obs.non_negative
    if signed and bits == 1:
        return max(obs.abs_mean, 1e-12), True  # binary {-a, a}: a = E|x| minimises the error
    _, qmax = _act_qrange(bits, signed)
    if method == "max":
        t = obs.abs_max
    elif method == "percentile":
        t = percentile_threshold(obs.hist, obs.hist_max, cfg.percentile)
    elif method == "kl":
        t = kl_threshold(obs.hist, obs.hist_max, qmax)
    else:
        t = mse_threshold(obs.hist, obs.hist_max, qmax)
    if not t > 0:
        t = obs.abs_max if obs.abs_max > 0 else 1.0
    return t / qmax, signed


def activation_scale(
    x: torch.Tensor | Iterable[torch.Tensor],
    bits: int,
    *,
    method: str = "auto",
    config: QuantConfig | None = None,
) -> tuple[float, bool]:
    """Calibrate one activation: ``(scale, signed)`` from a tensor or an iterable of tensors."""
    cfg = config or QuantConfig()
    b = check_bits(bits, kind="activation")
    if b is None:
        raise AmcError("activation_scale needs bits in 1..8")
    method = _check_choice("activation calibration", method, ACT_CALIBRATIONS)
    method = cfg.act_method(b) if method == "auto" else method
    obs = ActObserver(bins=cfg.hist_bins, histogram=method in _HIST_METHODS, abs_mean=b == 1)
    for t in [x] if isinstance(x, torch.Tensor) else x:
        obs.observe(t)
    if obs.count == 0:
        raise AmcError("activation_scale got no data")
    return _scale_from_observer(obs, b, method, cfg)


# --------------------------------------------------------------------------------------------------
# the wrapper


class QuantWrapper(nn.Module):
    """A ``Conv2d``/``Linear`` that quantizes its input activation and its weight on the fly.

    The float weight stays in ``self.module.weight`` (the master copy QAT updates); its quantized
    version is cached until it changes (in place, replaced or moved), and gradients reach it by the
    straight-through estimator.

    Args:
        module: the ``nn.Conv2d`` or ``nn.Linear`` to wrap (kept, not copied).
        w_bits: weight bits 1..8, or None/32 for float weights.
        a_bits: input-activation bits 1..8, or None/32 for a float input. Needs :func:`calibrate`.
        config: how to quantize (defaults to ``QuantConfig()``).
        scheme: weight scheme overriding ``config.weight_scheme`` for this layer.
        name: the layer's name, for messages.
    """

    #: set by :func:`calibrate` for its pass: run the float layer (float weight, float input),
    #: feeding the input to ``observer`` when there is one (a class default, so that wrappers
    #: pickled by older versions load too)
    _float_pass = False

    def __init__(
        self,
        module: nn.Module,
        w_bits: int | None = None,
        a_bits: int | None = None,
        *,
        config: QuantConfig | None = None,
        scheme: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name or type(module).__name__
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise AmcError(f"layer {self.name!r}: only nn.Conv2d and nn.Linear can be quantized, "
                           f"got {type(module).__name__}")
        self.module = module
        self.config = config or QuantConfig()
        self.w_bits = check_bits(w_bits, layer=self.name, kind="weight")
        self.a_bits = check_bits(a_bits, layer=self.name, kind="activation")
        self.scheme = _check_choice("weight scheme", scheme or self.config.weight_scheme, WEIGHT_SCHEMES)
        if self.w_bits is not None:
            _check_scheme_bits(self.scheme, self.w_bits, self.name)
        self.act_scale: float | None = None
        self.act_signed = True
        self.observer: ActObserver | None = None
        self._cache: QuantizedWeight | None = None
        self._cache_deq: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._pinned = False  # the cache is authoritative (loaded codes), until QAT changes weights

    # -- weights -----------------------------------------------------------------------------
    def _quantize_now(self, w: torch.Tensor) -> QuantizedWeight:
        cfg = self.config
        return quantize_weight_codes(w, self.w_bits, per_channel=cfg.per_channel, scheme=self.scheme,
                                     clip=cfg.weight_clip, kmeans_iters=cfg.kmeans_iters)

    def _key(self, w: torch.Tensor) -> tuple:
        return (w.data_ptr(), w._version, w.dtype, w.device, self.w_bits, self.scheme)

    def quantized_weight(self) -> QuantizedWeight | None:
        """The integer codes of the current weight, or None for float weights.

        Cached: recomputed only when the float weight changed (in place, replaced or moved).
        """
        if self.w_bits is None:
            return None
        w = self.module.weight
        key = self._key(w)
        if key == self._cache_key:
            return self._cache
        deq = self._cache_deq
        if self._pinned and deq is not None and deq.shape == w.shape and torch.equal(w.detach(), deq.to(w)):
            # same values in a new tensor (a copy, a device move): the loaded codes still hold
            self._cache_deq, self._cache_key = deq.to(w), key
            return self._cache
        self._pinned = False
        with torch.no_grad():
            qw = self._quantize_now(w)
            self._cache, self._cache_deq, self._cache_key = qw, qw.dequantize(w.dtype), key
        return qw

    def _install_quantized(self, qw: QuantizedWeight, deq: torch.Tensor) -> None:
        """Use already computed codes of exactly this weight (a :class:`QuantCache` hit)."""
        self._cache, self._cache_deq, self._cache_key = qw, deq, self._key(self.module.weight)
        self._pinned = False

    def pin_quantized_weight(self, qw: QuantizedWeight) -> None:
        """Use ``qw`` as this layer's quantized weight (and its dequantized values as the float
        weight) until the weight changes: how :func:`load_packed` restores the exact stored codes
        (re-quantizing dequantized values need not give the same codes, e.g. with k-means)."""
        w = self.module.weight
        deq = qw.dequantize(w.dtype).to(w.device)
        with torch.no_grad():
            w.copy_(deq)
        self.w_bits, self.scheme = qw.bits, qw.scheme
        self._cache, self._cache_deq, self._cache_key = qw, deq, self._key(w)
        self._pinned = True

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward uses: the cached fake-quantized weight, with the straight-through
        estimator (``w + (q(w) - w).detach()``) when a gradient is wanted; or the float weight."""
        w = self.module.weight
        if self.w_bits is None:
            return w
        self.quantized_weight()
        deq = self._cache_deq
        if torch.is_grad_enabled() and w.requires_grad:
            return w + (deq - w).detach()
        return deq

    # -- activations ---------------------------------------------------------------------------
    def set_activation_range(self, scale: float, signed: bool) -> None:
        if not (scale > 0 and math.isfinite(scale)):
            raise AmcError(f"layer {self.name!r}: activation scale must be positive, got {scale}")
        self.act_scale, self.act_signed = float(scale), bool(signed)

    def _layer_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Conv2d):
            return m._conv_forward(x, w, m.bias)  # what nn.Conv2d.forward computes
        return F.linear(x, w, m.bias)  # what nn.Linear.forward computes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._float_pass:  # calibration observes the float model
            if self.observer is not None:
                self.observer.observe(x)
            return self._layer_forward(x, self.module.weight)
        if self.a_bits is not None:
            if self.act_scale is None:
                raise AmcError(f"layer {self.name!r} quantizes its input to {self.a_bits} bits but was never "
                               "calibrated; pass calibration= to quantize_model or call calibrate(model, batches)")
            x = fake_quant_activation(x, self.a_bits, self.act_scale, self.act_signed)
        return self._layer_forward(x, self.effective_weight())

    # -- state ---------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"w_bits": self.w_bits, "a_bits": self.a_bits, "scheme": self.scheme,
                "act_scale": self.act_scale, "act_signed": self.act_signed, "name": self.name,
                "config": self.config.to_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.config = QuantConfig.from_dict(state.get("config", {}))
        self.w_bits = check_bits(state.get("w_bits"), layer=self.name, kind="weight")
        self.a_bits = check_bits(state.get("a_bits"), layer=self.name, kind="activation")
        self.scheme = state.get("scheme", self.config.weight_scheme)
        self.act_scale = state.get("act_scale")
        self.act_signed = bool(state.get("act_signed", True))
        self.name = state.get("name", self.name)
        self._cache_key, self._pinned = None, False

    def extra_repr(self) -> str:
        act = "float" if self.a_bits is None else f"{self.a_bits}{'s' if self.act_signed else 'u'}"
        w = "float" if self.w_bits is None else f"{self.w_bits} ({self.scheme})"
        return f"w_bits={w}, a_bits={act}"


# --------------------------------------------------------------------------------------------------
# model-level


def _layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Quantizable layers by name: wrappers, and Conv2d/Linear not inside a wrapper."""
    out: dict[str, nn.Module] = {}
    inside: set[str] = set()
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, QuantWrapper):
            out[name] = m
            inside.add(name)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            out[name] = m
    return out


def quantized_layers(model: nn.Module) -> dict[str, QuantWrapper]:
    """The :class:`QuantWrapper` modules of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantWrapper)}


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _batches(data: Any) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        yield data
        return
    for item in data:
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            yield item[0]  # (x, y) batches from a loader
        else:
            raise AmcError("calibration data must be a tensor, or an iterable of tensors or (x, y) batches; "
                           f"got an item of type {type(item).__name__}")


# --------------------------------------------------------------------------------------------------
# exact fingerprints and the cross-call cache


def _digest(t: torch.Tensor) -> bytes:
    """A hash of a tensor's exact contents (bytes), dtype, shape and device."""
    t = t.detach()
    h = hashlib.sha1(usedforsecurity=False)  # not for security: a content key, fast (SHA-NI)
    h.update(f"{t.dtype}|{tuple(t.shape)}|{t.device}".encode())
    if t.numel():
        h.update(memoryview(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy()))
    return h.digest()


class _Fingerprint:
    """The float model a (possibly wrapped) model computes during calibration, as hashes: one per
    parameter/buffer under its unwrapped name (``conv1.module.weight`` -> ``conv1.weight``), and
    one of the whole (architecture: module names, types and ``extra_repr``; and every tensor)."""

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
                                       model.named_buffers(remove_duplicate=False)):
            if t is None:
                continue
            d = _digest(t)
            self.tensors[norm(name)] = d
            h.update(norm(name).encode() + b"=" + d)
        self.model = h.digest()


class QuantCache:
    """Results of :func:`quantize_model` that later calls can reuse, exactly.

    A search builds one compressed model per episode from the same float model (``--mode quant``)
    or from pruned copies of it (``--mode joint``). Pass one ``QuantCache`` to every
    :func:`quantize_model` (``apply_policy(..., quant_cache=)``) and each call only recomputes what
    it has not seen:

    - weight codes (:class:`QuantizedWeight` and its dequantized tensor) keyed by the hash of the
      float weight's bytes (plus dtype, shape, device) and the bits, scheme, clip, per-channel and
      k-means options; least recently used entries go beyond ``max_weight_bytes``;
    - the float-model input statistics of each calibrated layer (:class:`ActObserver`), keyed by the
      hash of the whole float model (architecture and every parameter/buffer) and of the calibration
      batches read; at most ``max_models`` models are kept;
    - the activation scale of each (layer, bits, rule) of those statistics.

    Keys are content hashes, not object ids: a hit is what a fresh computation would return, so a
    model quantized through the cache equals one quantized without it (``amc apply``). Returned
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
        self._stats: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
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

    # -- weights -------------------------------------------------------------------------------
    def _weight(self, m: QuantWrapper, digest: bytes) -> None:
        if m._pinned:  # codes loaded from a file (load_packed) stay this wrapper's own, uncached
            m.quantized_weight()
            return
        cfg = m.config
        key = (digest, m.w_bits, m.scheme, cfg.weight_clip, cfg.per_channel, cfg.kmeans_iters)
        hit = self._weights.get(key)
        if hit is not None:
            self._weights.move_to_end(key)
            self.hits["weights"] += 1
            m._install_quantized(hit[0], hit[1])
            return
        self.misses["weights"] += 1
        qw = m.quantized_weight()
        deq = m._cache_deq
        nbytes = sum(t.numel() * t.element_size() for t in (qw.codes, qw.scale, qw.centroids, deq) if t is not None)
        if nbytes > self.max_weight_bytes:
            return
        self._weights[key] = (qw, deq, nbytes)
        self._weight_bytes += nbytes
        while self._weight_bytes > self.max_weight_bytes:
            _, (_, _, n) = self._weights.popitem(last=False)
            self._weight_bytes -= n

    # -- activation statistics -----------------------------------------------------------------
    def _stats_entry(self, key: tuple) -> dict[str, Any]:
        entry = self._stats.get(key)
        if entry is None:
            entry = self._stats[key] = {"observers": {}, "scales": {}}
            while len(self._stats) > self.max_models:
                self._stats.popitem(last=False)
        else:
            self._stats.move_to_end(key)
        return entry


_ATOMIC = (type(None), bool, int, float, complex, str, bytes)
_COPY_HOOKS = ("__deepcopy__", "__copy__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__")


@functools.lru_cache(maxsize=512)
def _plain_copyable(cls: type) -> bool:
    """Whether ``copy.deepcopy`` of a ``cls`` instance is nn.Module's default (new object, deep copy
    of ``__getstate__()``, ``__setstate__``), so :func:`_copy_model` may do the same by hand."""
    import copyreg

    return (cls not in copyreg.dispatch_table
            and all(getattr(cls, k, None) is getattr(nn.Module, k, None) for k in _COPY_HOOKS)
            and not any("__slots__" in vars(c) for c in cls.__mro__))


def _copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, about 10x faster on small models: each module is rebuilt the way
    deepcopy rebuilds it (``__new__``, a deep copy of ``__getstate__()``, ``__setstate__``), but the
    many empty hook dicts and the int/str/tuple attributes skip deepcopy's generic machinery.
    Parameters, buffers and every other attribute go through ``copy.deepcopy`` with one shared
    memo, so ties and shared submodules stay shared; a module class that customises copying is
    deep-copied by ``copy.deepcopy`` itself."""
    memo: dict[int, Any] = {}

    def value(v: Any) -> Any:
        t = type(v)
        if t in _ATOMIC or (t is tuple and all(type(i) in _ATOMIC for i in v)):
            return v
        if t in (dict, OrderedDict, set, list) and not v:
            return t()
        return copy.deepcopy(v, memo)

    def module(m: nn.Module) -> nn.Module:
        got = memo.get(id(m))
        if got is not None:
            return got
        cls = type(m)
        if not _plain_copyable(cls):
            return copy.deepcopy(m, memo)
        new = cls.__new__(cls)
        memo[id(m)] = new
        state = {}
        for k, v in m.__getstate__().items():
            if k == "_modules":
                state[k] = {n: None if c is None else module(c) for n, c in v.items()}
            elif k in ("_parameters", "_buffers"):
                state[k] = {n: None if t is None else copy.deepcopy(t, memo) for n, t in v.items()}
            else:
                state[k] = value(v)
        new.__setstate__(state)
        return new

    return module(model)


def _observer_options(m: QuantWrapper) -> tuple[int, bool, bool]:
    """(bins, histogram, abs_mean) that calibrating ``m`` at its bits needs."""
    return m.config.hist_bins, m.config.act_method(m.a_bits) in _HIST_METHODS, m.a_bits == 1


def _covers(obs: ActObserver | None, bins: int, histogram: bool, abs_mean: bool) -> bool:
    """Whether cached statistics serve a layer that needs these observer options."""
    return (obs is not None and obs.bins == bins and (obs.histogram or not histogram)
            and (obs.track_abs_mean or not abs_mean))


def calibrate(qmodel: nn.Module, calibration: Any, *, max_batches: int | None = None,
              cache: QuantCache | None = None) -> nn.Module:
    """Set every activation-quantizing wrapper's input scale from ``calibration`` batches.

    One forward pass of the **float** model (every wrapper runs its float weight on its float
    input, as in HAQ's calibration and PyTorch's post-training quantization) over at most
    ``max_batches`` batches (default: the wrappers' ``config.calibration_batches``) records all the
    layers' input statistics at once. A layer's range thus depends on the float model and the
    calibration images only, not on the other layers' bits. The model runs in eval mode, restored.

    Args:
        cache: a :class:`QuantCache`: statistics and scales already computed for this float model
            and these batches are reused (no forward pass when every layer is known).
    """
    wrappers = {n: m for n, m in quantized_layers(qmodel).items() if m.a_bits is not None}
    if not wrappers:
        return qmodel
    limit = max_batches or max(m.config.calibration_batches for m in wrappers.values())
    return _calibrate(qmodel, wrappers, _first_batches(wrappers, calibration, limit), cache, None)


def _first_batches(wrappers: Mapping[str, QuantWrapper], calibration: Any, limit: int) -> list[torch.Tensor]:
    if calibration is None:
        raise AmcError(f"layers {sorted(wrappers)[:5]}... quantize their input activations but no calibration "
                       "data was given; pass calibration=<a batch, or an iterable of batches>")
    batches = list(itertools.islice(_batches(calibration), limit))
    if not batches:
        raise AmcError("the calibration data yielded no batch; pass at least one input batch")
    return batches


def _calibrate(qmodel: nn.Module, wrappers: dict[str, QuantWrapper], batches: list[torch.Tensor],
               cache: QuantCache | None, fp: _Fingerprint | None) -> nn.Module:
    needs = {n: _observer_options(m) for n, m in wrappers.items()}
    if cache is not None:
        fp = fp or _Fingerprint(qmodel)
        entry = cache._stats_entry((fp.model, tuple(_digest(x) for x in batches)))
        observers: dict[str, ActObserver] = entry["observers"]
        missing = [n for n in wrappers if not _covers(observers.get(n), *needs[n])]
        if missing:
            cache.misses["stats"] += 1
        else:
            cache.hits["stats"] += 1
    else:
        entry, observers, missing = None, {}, list(wrappers)
    if missing:
        observers.update(_observe_float(qmodel, {n: wrappers[n] for n in missing}, needs, batches))
    for n, m in wrappers.items():
        obs = observers.get(n)
        if obs is None or obs.count == 0:
            logger.warning("layer %r never ran during calibration; its input stays uncalibrated", n)
            continue
        method = m.config.act_method(m.a_bits)
        if entry is None:
            scale, signed = _scale_from_observer(obs, m.a_bits, method, m.config)
        else:
            skey = (n, m.a_bits, method, m.config.percentile if method == "percentile" else None)
            got = entry["scales"].get(skey)
            if got is None:
                cache.misses["scales"] += 1
                got = entry["scales"][skey] = _scale_from_observer(obs, m.a_bits, method, m.config)
            else:
                cache.hits["scales"] += 1
            scale, signed = got
        m.set_activation_range(scale, signed)
    return qmodel


def _observe_float(qmodel: nn.Module, observe: dict[str, QuantWrapper], needs: dict[str, tuple[int, bool, bool]],
                   batches: list[torch.Tensor]) -> dict[str, ActObserver]:
    """One no-grad eval pass of the float model over ``batches``, observing the inputs of ``observe``."""
    everyone = list(quantized_layers(qmodel).values())
    for n, m in observe.items():
        bins, hist, abs_mean = needs[n]
        m.observer = ActObserver(bins=bins, histogram=hist, abs_mean=abs_mean)
    modes = {m: m.training for m in qmodel.modules()}
    device = model_device(qmodel)
    try:
        for m in everyone:
            m._float_pass = True
        qmodel.eval()
        with torch.no_grad():
            for x in batches:
                qmodel(x.to(device))
    finally:
        for mod, tr in modes.items():
            mod.training = tr
        for m in everyone:
            m._float_pass = False
        out = {n: m.observer for n, m in observe.items()}
        for m in observe.values():
            m.observer = None
    return out


def quantize_model(
    model: nn.Module,
    w_bits: Mapping[str, int | None] | None = None,
    a_bits: Mapping[str, int | None] | None = None,
    *,
    config: QuantConfig | None = None,
    calibration: Any = None,
    schemes: Mapping[str, str] | None = None,
    inplace: bool = False,
    cache: QuantCache | None = None,
) -> nn.Module:
    """Replace the named ``Conv2d``/``Linear`` layers by :class:`QuantWrapper` and calibrate them.

    Args:
        model: float model (or an already quantized one: its wrappers are re-made).
        w_bits: layer name (as in ``model.named_modules()``) -> weight bits 1..8, or None/32 float.
        a_bits: layer name -> bits of the layer's *input* activation, or None/32 float.
            Layers in neither mapping stay float.
        config: quantization options (:class:`QuantConfig`).
        calibration: a batch tensor, or an iterable of batches / ``(x, y)`` pairs; required when
            any ``a_bits`` is set (at most ``config.calibration_batches`` are read). Activation
            ranges come from the float model's statistics (see :func:`calibrate`).
        schemes: per-layer weight-scheme overrides (e.g. first/last layer ``linear`` in a ternary net).
        inplace: modify ``model`` itself instead of a deep copy.
        cache: a :class:`QuantCache` shared by calls (a search's episodes): weight codes, activation
            statistics and scales computed before for the same bytes are reused, and the copy is made
            by a faster equivalent of ``copy.deepcopy``. The result is the same as without it.
    Returns the quantized model, weights already quantized and cached for evaluation.
    """
    cfg = config or QuantConfig()
    w_bits = dict(w_bits or {})
    a_bits = dict(a_bits or {})
    schemes = dict(schemes or {})
    layers = _layer_modules(model)
    named = set(w_bits) | set(a_bits) | set(schemes)
    unknown = sorted(n for n in named if n not in layers or n == "")
    if unknown:
        valid = sorted(n for n in layers if n)
        shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
        raise AmcError(f"unknown or non-quantizable layer name(s) {unknown}; quantizable Conv2d/Linear layers "
                       f"are: {shown}")
    checked: dict[str, tuple[int | None, int | None]] = {}
    for n in sorted(set(w_bits) | set(a_bits)):
        checked[n] = (check_bits(w_bits.get(n), layer=n, kind="weight"),
                      check_bits(a_bits.get(n), layer=n, kind="activation"))
    target = model if inplace else _copy_model(model) if cache is not None else copy.deepcopy(model)
    for n, (wb, ab) in checked.items():
        mod = target.get_submodule(n)
        inner = mod.module if isinstance(mod, QuantWrapper) else mod
        if wb is None and ab is None:
            if mod is not inner:
                _set_submodule(target, n, inner)
            continue
        wrapper = QuantWrapper(inner, wb, ab, config=cfg, scheme=schemes.get(n), name=n)
        _set_submodule(target, n, wrapper.train(inner.training))
    fp = _Fingerprint(target) if cache is not None else None
    if any(ab is not None for _, ab in checked.values()):
        wrappers = {n: m for n, m in quantized_layers(target).items() if m.a_bits is not None}
        _calibrate(target, wrappers, _first_batches(wrappers, calibration, cfg.calibration_batches), cache, fp)
    with torch.no_grad():
        for n, m in quantized_layers(target).items():
            if m.w_bits is None:
                continue
            if fp is None:
                m.quantized_weight()  # quantize once now, not on the first evaluated batch
            else:
                cache._weight(m, fp.tensors[f"{n}.weight" if n else "weight"])
    return target


def first_last_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[str, str]:
    """Names of the first and the last ``Conv2d``/``Linear`` (or wrapper) to run, by one traced
    forward pass with hooks (execution order, not definition order). Modes are restored."""
    layers = _layer_modules(model)
    if not layers:
        raise AmcError("the model has no Conv2d/Linear layer to quantize")
    order: list[str] = []
    handles = []
    for n, m in layers.items():
        handles.append(m.register_forward_hook(lambda mod, inp, out, n=n: order.append(n)))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example_input.to(model_device(model)))
    finally:
        for h in handles:
            h.remove()
        for mod, tr in modes.items():
            mod.training = tr
    if not order:
        raise AmcError("no Conv2d/Linear layer ran on the example input")
    return order[0], order[-1]


def pin_first_last(
    w_bits: Mapping[str, int | None],
    a_bits: Mapping[str, int | None],
    first: str,
    last: str,
    *,
    bits: int = 8,
) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """HAQ's rule on a policy: first layer ``W{bits}`` with a float input, last ``W{bits}A{bits}``."""
    w, a = dict(w_bits), dict(a_bits)
    w[first], a[first] = bits, None
    w[last], a[last] = bits, bits
    return w, a


# --------------------------------------------------------------------------------------------------
# errors (for tests and reports)


def quantization_error(x: torch.Tensor, x_q: torch.Tensor) -> float:
    """Relative squared error ``||x - x_q||^2 / ||x||^2`` (0 = exact)."""
    x, x_q = x.detach().double(), x_q.detach().double()
    return float((x - x_q).pow(2).sum() / x.pow(2).sum().clamp(min=1e-300))


def weight_quantization_error(
    w: torch.Tensor, bits: int | None, *, per_channel: bool = True, scheme: str = "linear", clip: str = "auto"
) -> float:
    """:func:`quantization_error` of :func:`quantize_weight`."""
    return quantization_error(w, quantize_weight(w.detach(), bits, per_channel=per_channel, scheme=scheme,
                                                 clip=clip))


def activation_quantization_error(x: torch.Tensor, bits: int | None, *, method: str = "auto",
                                  config: QuantConfig | None = None) -> float:
    """:func:`quantization_error` of ``x`` fake-quantized with a scale calibrated on ``x`` itself."""
    if check_bits(bits, kind="activation") is None:
        return 0.0
    scale, signed = activation_scale(x, bits, method=method, config=config)
    return quantization_error(x, fake_quant_activation(x, bits, scale, signed))


# --------------------------------------------------------------------------------------------------
# size and storage


def weight_storage_bits(qmodel: nn.Module) -> int:
    """Weight storage in bits: sum over Conv2d/Linear weights of ``numel x bits`` (float = 32).

    Biases, BN, scales and codebooks are not counted (they are the small overhead of a packed file).
    """
    total = 0
    for m in _layer_modules(qmodel).values():
        if isinstance(m, QuantWrapper):
            total += m.module.weight.numel() * (m.w_bits or FLOAT_BITS)
        else:
            total += m.weight.numel() * FLOAT_BITS
    return int(total)


def huffman_size_bits(qmodel: nn.Module) -> int:
    """Bits a per-layer Huffman coding of the integer weight codes would take (Deep Compression,
    section 4), code tables excluded; float layers count 32 bits per weight. Never more than
    :func:`weight_storage_bits` (Huffman is optimal among prefix codes, fixed length is one)."""
    total = 0
    for m in _layer_modules(qmodel).values():
        if isinstance(m, QuantWrapper) and m.w_bits is not None:
            total += huffman_bits(m.quantized_weight().codes.cpu().numpy())
        else:
            w = m.module.weight if isinstance(m, QuantWrapper) else m.weight
            total += w.numel() * FLOAT_BITS
    return int(total)


def skeleton_bytes(qmodel: nn.Module) -> bytes:
    """The architecture: a pickled copy of the model whose persistent tensors are on the meta
    device (no storage), zlib-compressed (about 2 KB for a ResNet-20)."""
    sk = copy.deepcopy(qmodel)
    for m in sk.modules():
        if isinstance(m, QuantWrapper):
            m._cache = m._cache_deq = m._cache_key = None
            m._pinned = False
            m.observer = None
        for k, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[k] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for k, b in list(m._buffers.items()):
            if b is not None and k not in m._non_persistent_buffers_set:
                m._buffers[k] = torch.empty_like(b, device="meta")
    return zlib.compress(pickle.dumps(sk, protocol=pickle.HIGHEST_PROTOCOL), 9)


def _weight_key(name: str) -> str:
    return f"{name}.module.weight" if name else "module.weight"


def pack_model(
    qmodel: nn.Module, *, float_dtype: torch.dtype = torch.float32, include_architecture: bool = True
) -> dict[str, Any]:
    """The model as an honest storage package (what :func:`save_packed` writes).

    Quantized weights become one ``uint8`` stream of bit-packed codes (``ceil(numel x bits / 8)``
    bytes per layer); per-channel scales and k-means centroids one fp32 array; the other floating
    state (biases, BN, float layers) one ``float_dtype`` array; integer state one int64 array; the
    layout a zlib-compressed JSON document; and, with ``include_architecture``, the architecture as a
    compressed pickle of a storage-free copy of the model. Few tensors means little overhead.
    """
    if float_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise AmcError(f"float_dtype must be torch.float32, float16 or bfloat16, got {float_dtype}")
    state = qmodel.state_dict()
    wrappers = quantized_layers(qmodel)
    layers: dict[str, dict[str, Any]] = {}
    code_chunks: list[np.ndarray] = []
    qparams: list[torch.Tensor] = []
    code_off = qp_off = 0
    for name, m in wrappers.items():
        if m.w_bits is None:
            continue
        qw = m.quantized_weight()
        data = pack_bits(qw.codes.cpu().numpy(), qw.bits)  # (ceil(numel * bits / 8),) uint8
        entry: dict[str, Any] = {"bits": qw.bits, "scheme": qw.scheme, "shape": list(qw.codes.shape),
                                 "codes": [code_off, int(data.size)]}
        code_chunks.append(data)
        code_off += int(data.size)
        for key in ("scale", "centroids"):
            t = getattr(qw, key)
            if t is not None:
                t = t.detach().float().cpu().reshape(-1)
                entry[key] = [qp_off, int(t.numel())]
                qparams.append(t)
                qp_off += int(t.numel())
        layers[name] = entry
    skip = {_weight_key(n) for n in layers}
    sections: dict[str, list[torch.Tensor]] = {"float": [], "int": []}
    offsets = {"float": 0, "int": 0}
    index: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    for key, v in state.items():
        if key in skip:
            continue
        if not isinstance(v, torch.Tensor):
            extra[key] = v
            continue
        if v.is_floating_point():
            sec, flat = "float", v.detach().cpu().to(float_dtype).reshape(-1)
        elif v.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
            sec, flat = "int", v.detach().cpu().to(torch.int64).reshape(-1)
        else:
            raise AmcError(f"cannot pack state {key!r} of dtype {v.dtype}")
        index.append({"key": key, "section": sec, "dtype": str(v.dtype).replace("torch.", ""),
                      "shape": list(v.shape), "offset": offsets[sec]})
        sections[sec].append(flat)
        offsets[sec] += flat.numel()
    layout = {"layers": layers, "wrappers": list(wrappers), "index": index, "extra_state": extra,
              "training": bool(qmodel.training)}
    try:
        meta = zlib.compress(json.dumps(layout, separators=(",", ":")).encode(), 9)
    except TypeError as e:
        raise AmcError(f"a module's extra state is not JSON-serialisable, cannot pack it: {e}") from None
    codes = np.concatenate(code_chunks) if code_chunks else np.zeros(0, np.uint8)
    return {
        "format": PACKED_FORMAT,
        "version": PACKED_VERSION,
        "layout": meta,
        "architecture": skeleton_bytes(qmodel) if include_architecture else None,
        "codes": torch.from_numpy(codes),
        "qparams": torch.cat(qparams) if qparams else torch.zeros(0),
        "float": torch.cat(sections["float"]) if sections["float"] else torch.zeros(0, dtype=float_dtype),
        "int": torch.cat(sections["int"]) if sections["int"] else torch.zeros(0, dtype=torch.int64),
        "weight_storage_bits": weight_storage_bits(qmodel),
        "huffman_size_bits": huffman_size_bits(qmodel),
    }


def unpack_model(
    package: Mapping[str, Any], *, model: nn.Module | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the model of :func:`pack_model`, the stored codes pinned as its quantized weights, so
    that it computes exactly what the packed model computed.

    Args:
        model: a model of the same architecture (float or quantized; copied, not modified) to fill
            instead of unpickling the stored architecture. Needed when the package has none.
    """
    if not isinstance(package, Mapping) or package.get("format") != PACKED_FORMAT:
        raise AmcError("not an amc packed model; write one with amc.quantization.save_packed")
    if int(package.get("version", -1)) > PACKED_VERSION:
        raise AmcError(f"packed model version {package['version']} is newer than this amc reads "
                       f"({PACKED_VERSION}); upgrade amc")
    layout = json.loads(zlib.decompress(package["layout"]).decode())
    if model is not None:
        target = copy.deepcopy(model)
        for name in layout["wrappers"]:
            try:
                mod = target.get_submodule(name)
            except AttributeError:
                raise AmcError(f"the given model has no layer {name!r}; pass the architecture the package "
                               "was made from") from None
            inner = mod.module if isinstance(mod, QuantWrapper) else mod
            _set_submodule(target, name, QuantWrapper(inner, name=name).train(inner.training))
    elif package.get("architecture") is not None:
        target = pickle.loads(zlib.decompress(package["architecture"]))
    else:
        raise AmcError("this package holds no architecture; pass model=<a model of the same architecture>")
    state: dict[str, Any] = dict(layout["extra_state"])
    secs = {"float": package["float"], "int": package["int"]}
    for e in layout["index"]:
        n = math.prod(e["shape"])
        t = secs[e["section"]][e["offset"]: e["offset"] + n]
        state[e["key"]] = t.to(getattr(torch, e["dtype"])).reshape(e["shape"])
    codes_all = package["codes"].numpy()
    qparams = package["qparams"]
    qws: dict[str, QuantizedWeight] = {}
    for name, e in layout["layers"].items():
        off, nbytes = e["codes"]
        numel = math.prod(e["shape"])
        codes = torch.from_numpy(unpack_bits(codes_all[off: off + nbytes], e["bits"], numel)).reshape(e["shape"])
        qp = {k: qparams[e[k][0]: e[k][0] + e[k][1]].clone() for k in ("scale", "centroids") if k in e}
        qw = QuantizedWeight(codes, qp.get("scale"), e["bits"], e["scheme"], qp.get("centroids"))
        qws[name] = qw
        state[_weight_key(name)] = qw.dequantize(torch.float32)
    try:
        target.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise AmcError(f"the packed state does not fit the model: {e}") from None
    target.to(device)
    target.train(bool(layout.get("training", False)))
    wrappers = quantized_layers(target)
    for name, qw in qws.items():
        wrappers[name].pin_quantized_weight(qw)
    return target


def save_packed(
    qmodel: nn.Module,
    path: str | os.PathLike,
    *,
    float_dtype: torch.dtype = torch.float32,
    include_architecture: bool = True,
) -> int:
    """Write :func:`pack_model` of ``qmodel`` to ``path`` (atomically); returns the file size in bytes."""
    atomic_torch_save(pack_model(qmodel, float_dtype=float_dtype, include_architecture=include_architecture), path)
    return os.path.getsize(path)


def load_packed(
    path: str | os.PathLike, *, model: nn.Module | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a model written by :func:`save_packed`.

    Without ``model`` the architecture is unpickled from the file: load only files you trust (as
    with any pickle). With ``model`` (same architecture, e.g. ``build_model(spec)``) nothing is
    unpickled: the tensors and the JSON layout are read with ``torch.load(weights_only=True)``.
    """
    if not os.path.exists(path):
        raise AmcError(f"packed model {str(path)!r} not found")
    try:
        package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise AmcError(f"cannot read packed model {str(path)!r} ({type(e).__name__}: {e}); "
                       "write one with save_packed") from None
    return unpack_model(package, model=model, device=device)
