"""Quantization schemes: how a weight tensor becomes integer codes and back, and the uniform
activation quantizer.

Weight schemes are small objects registered by name (as torchao pairs a config with a registered
handler): :func:`get_scheme` looks a name up once and the object does the work, so no caller
branches on scheme names. A scheme stores symmetric codes per output channel (``scale``) or one
shared codebook per layer (``centroids``):

========== ========================================================================= =========
scheme     values                                                                    bits
========== ========================================================================= =========
linear     ``s * {-(2^(b-1)-1) .. 2^(b-1)-1}`` (1 bit: same as binary)                 1..8
binary     ``{-a, +a}``, ``a = mean|w|`` (XNOR-Net, Rastegari et al. 2016)            1
ternary    ``{-a, 0, +a}``, threshold ``0.7 mean|w|`` (TWN, Li & Liu 2016, eq. 9-10)   2
kmeans     ``2^b`` shared centroids per layer, linear init, Lloyd iterations           1..8
           (Deep Compression, Han et al. ICLR 2016, section 3)
========== ========================================================================= =========

The linear scale clips at ``max|w|`` or, with ``clip="mse"`` (``auto``: below 5 bits), at the
per-channel clip that minimises the squared error (HAQ clips weights too, by KL).

Bits are an int in 1..8; ``None`` or 32 means float (no quantization).
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from amc.errors import AmcError

FLOAT_BITS = 32
LOW_BITS = 5  # "auto" rules switch to the error-minimising clip / KL below this many bits
WEIGHT_CLIPS = ("auto", "max", "mse")


def check_choice(what: str, value: Any, valid: tuple[str, ...]) -> str:
    """``value`` lower-cased if it is one of ``valid``, else :class:`AmcError` listing them."""
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
    integral = isinstance(bits, numbers.Integral) and not isinstance(bits, bool)
    if not (integral or isinstance(bits, float) and bits.is_integer()):
        raise AmcError(f"layer {layer!r}: {kind} bits must be an int in 1..8, or None/32 for float; "
                       f"got {bits!r}")
    bits = int(bits)
    if bits == FLOAT_BITS:
        return None
    if not 1 <= bits <= 8:
        raise AmcError(f"layer {layer!r}: {kind} bits must be in 1..8 (or None/32 for float); got {bits}")
    return bits


# --------------------------------------------------------------------------------------------------
# weight codes and the scheme registry


@dataclass
class QuantizedWeight:
    """Integer codes of one weight tensor and what turns them back into floats.

    Attributes:
        codes: ``uint8`` tensor of the weight's shape, values in ``[0, 2**bits)``.
        scale: ``(C,)`` float32 per output channel, or ``(1,)`` per layer; ``None`` for k-means.
        bits: bits per code (1..8).
        scheme: the registered name of the scheme that made the codes (see :func:`get_scheme`).
        centroids: ``(2**bits,)`` float32 codebook of k-means.
    """

    codes: torch.Tensor
    scale: torch.Tensor | None
    bits: int
    scheme: str
    centroids: torch.Tensor | None = None

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return get_scheme(self.scheme).decode(self, dtype)


class WeightScheme(ABC):
    """How a weight tensor ``(C_out, ...)`` becomes :class:`QuantizedWeight` codes and back.

    Subclasses set ``name`` (and ``fixed_bits`` when they store a fixed width) and implement
    :meth:`encode` and :meth:`decode`; :func:`register_scheme` makes them selectable by name.
    """

    name: str = ""
    fixed_bits: int | None = None  # bits per weight the scheme always stores, if fixed

    @abstractmethod
    def encode(self, w: torch.Tensor, bits: int, *, per_channel: bool = True, clip: str = "auto",
               kmeans_iters: int = 10) -> QuantizedWeight:
        """Codes of the float32 weight ``w`` at ``bits`` (already checked by :meth:`check_bits`).
        Options a scheme does not use are ignored."""

    @abstractmethod
    def decode(self, qw: QuantizedWeight, dtype: torch.dtype) -> torch.Tensor:
        """The float values of ``qw`` (shape of ``qw.codes``)."""

    def num_codes(self, bits: int) -> int:
        """How many distinct codes (levels) ``bits``-bit weights of this scheme use: ``[0, n)``."""
        return 2**bits

    def check_bits(self, bits: int, layer: str = "?") -> None:
        """Raise :class:`AmcError` when the scheme cannot store ``bits``-bit weights."""
        need = self.fixed_bits
        if need is not None and bits != need:
            raise AmcError(f"layer {layer!r}: the {self.name} weight scheme stores {need} bit(s) per weight, but "
                           f"w_bits is {bits}; pass w_bits={need} for it, or scheme 'linear'/'kmeans' for "
                           f"{bits}-bit weights (quantize_model(..., schemes={{{layer!r}: 'linear'}}))")


_SCHEMES: dict[str, WeightScheme] = {}


def register_scheme(scheme: WeightScheme) -> WeightScheme:
    """Make ``scheme`` selectable by its ``name`` (``QuantConfig(weight_scheme=...)``, ``schemes=``)."""
    key = scheme.name.lower()
    if not key or key in _SCHEMES:
        raise ValueError(f"weight scheme {scheme.name!r} is empty or already registered")
    _SCHEMES[key] = scheme
    return scheme


def get_scheme(name: str) -> WeightScheme:
    """The registered scheme called ``name``; :class:`AmcError` listing the valid names otherwise."""
    return _SCHEMES[check_choice("weight scheme", name, scheme_names())]


def scheme_names() -> tuple[str, ...]:
    """Registered weight-scheme names, in registration order."""
    return tuple(_SCHEMES)


def _channels(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    return w.reshape(w.shape[0], -1) if (per_channel and w.dim() > 1) else w.reshape(1, -1)  # (C, K)


def _per_channel(scale: torch.Tensor, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return scale.to(dtype).view(-1, *([1] * (like.dim() - 1)))  # (C, 1, ...) broadcast over a channel


class BinaryScheme(WeightScheme):
    """``{-a, +a}`` per channel with ``a = mean|w|`` (XNOR-Net); code ``c`` means ``(2c - 1) a``."""

    name, fixed_bits = "binary", 1

    def encode(self, w, bits, *, per_channel=True, clip="auto", kmeans_iters=10):
        flat = _channels(w, per_channel)  # (C, K)
        codes = (flat >= 0).to(torch.uint8)
        return QuantizedWeight(codes.reshape(w.shape), flat.abs().mean(1), 1, self.name)

    def decode(self, qw, dtype):
        return (qw.codes.to(dtype) * 2.0 - 1.0) * _per_channel(qw.scale, qw.codes, dtype)


class TernaryScheme(WeightScheme):
    """``{-a, 0, +a}`` per channel (TWN, Li & Liu 2016): weights with ``|w| > 0.7 mean|w|`` (eq. 10)
    keep their sign, ``a`` is their mean ``|w|`` (eq. 9); code ``c`` means ``(c - 1) a``."""

    name, fixed_bits = "ternary", 2

    def encode(self, w, bits, *, per_channel=True, clip="auto", kmeans_iters=10):
        flat = _channels(w, per_channel)  # (C, K)
        a = flat.abs()
        mask = a > 0.7 * a.mean(1, keepdim=True)
        scale = (a * mask).sum(1) / mask.sum(1).clamp(min=1)
        codes = (torch.sign(flat) * mask + 1).to(torch.uint8)
        return QuantizedWeight(codes.reshape(w.shape), scale, 2, self.name)

    def decode(self, qw, dtype):
        return (qw.codes.to(dtype) - 1.0) * _per_channel(qw.scale, qw.codes, dtype)

    def num_codes(self, bits):
        return 3


class LinearScheme(WeightScheme):
    """Symmetric uniform codes ``s * {-qmax .. qmax}``, ``qmax = 2^(b-1) - 1``, per channel; code
    ``c`` means ``(c - qmax) s``. One bit has no symmetric grid: it is :class:`BinaryScheme`."""

    name = "linear"

    def encode(self, w, bits, *, per_channel=True, clip="auto", kmeans_iters=10):
        if bits == 1:
            return _BINARY.encode(w, 1, per_channel=per_channel)
        flat = _channels(w, per_channel)  # (C, K)
        qmax = 2 ** (bits - 1) - 1
        amax = flat.abs().amax(1)  # (C,)
        if clip == "auto":
            clip = "mse" if bits < LOW_BITS else "max"
        ratio = _mse_clip_ratio(flat, amax, qmax) if clip == "mse" else torch.ones_like(amax)
        scale = amax * ratio / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero channel: any scale
        q = torch.clamp(torch.round(flat / scale[:, None]), -qmax, qmax)
        return QuantizedWeight((q + qmax).to(torch.uint8).reshape(w.shape), scale, bits, self.name)

    def decode(self, qw, dtype):
        return (qw.codes.to(dtype) - float(2 ** (qw.bits - 1) - 1)) * _per_channel(qw.scale, qw.codes, dtype)

    def num_codes(self, bits):
        return 2**bits - 1


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
    best = cand.gather(0, errors(cand).argmin(0, keepdim=True))[0]  # (C,)
    d = float(coarse[1] - coarse[0])
    offsets = torch.linspace(-d, d, 10, dtype=flat.dtype, device=flat.device)[1:-1]  # (8,)
    fine = (best[None, :] + offsets[:, None]).clamp(0.02, 1.0)  # (8, C)
    cand = torch.cat([best[None, :], fine])
    return cand.gather(0, errors(cand).argmin(0, keepdim=True))[0]


def kmeans_1d(values: torch.Tensor, k: int, *, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of a 1-D tensor with ``k`` centroids initialised linearly over
    ``[min, max]`` (Deep Compression's best initialisation, section 3.2): ``(codes int64 (n,),
    centroids (k,) sorted)``. Empty clusters keep their value. In 1-D the centroids stay sorted, so
    assignment is a ``bucketize`` against the midpoints: O(n log k), no (n, k) distance matrix."""
    if k < 1:
        raise AmcError(f"k-means needs k >= 1 centroids, got {k}")
    v = values.detach().reshape(-1).float()
    if v.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=v.device), torch.zeros(k, device=v.device)
    cent = torch.linspace(float(v.min()), float(v.max()), k, device=v.device)
    for _ in range(iters):
        codes = torch.bucketize(v, (cent[1:] + cent[:-1]) / 2)  # nearest centroid
        counts = torch.bincount(codes, minlength=k)
        sums = torch.zeros_like(cent).index_add_(0, codes, v)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), cent)
        if torch.equal(new, cent):
            break
        cent = new
    return torch.bucketize(v, (cent[1:] + cent[:-1]) / 2), cent


class KMeansScheme(WeightScheme):
    """``2^b`` centroids shared by the layer (Deep Compression, section 3): :func:`kmeans_1d`
    initialised linearly over ``[min w, max w]`` (the paper's best init, section 3.2); code ``c``
    means ``centroids[c]``."""

    name = "kmeans"

    def encode(self, w, bits, *, per_channel=True, clip="auto", kmeans_iters=10):
        idx, cent = kmeans_1d(w, 2**bits, iters=kmeans_iters)
        return QuantizedWeight(idx.to(torch.uint8).reshape(w.shape), None, bits, self.name, cent)

    def decode(self, qw, dtype):
        return qw.centroids.to(dtype)[qw.codes.long()]


_BINARY = BinaryScheme()
for _scheme in (LinearScheme(), _BINARY, TernaryScheme(), KMeansScheme()):
    register_scheme(_scheme)

#: the built-in schemes (:func:`scheme_names` also lists schemes registered later)
WEIGHT_SCHEMES = scheme_names()


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
        scheme: a registered scheme name (:func:`scheme_names`).
        clip: ``linear`` only: ``max`` | ``mse`` | ``auto`` (mse below 5 bits).
    """
    sch = get_scheme(scheme)
    clip = check_choice("weight clip", clip, WEIGHT_CLIPS)
    b = check_bits(bits, kind="weight")
    if b is None:
        raise AmcError("quantize_weight_codes needs bits in 1..8; float weights have no codes")
    sch.check_bits(b)
    with torch.no_grad():
        return sch.encode(w.detach().float(), b, per_channel=per_channel, clip=clip, kmeans_iters=kmeans_iters)


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


def act_qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of ``bits``-bit activations: ``[-(2^(b-1)-1), 2^(b-1)-1]`` or ``[0, 2^b-1]``."""
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
    lo, hi = act_qrange(b, signed)
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.fake_quantize_per_tensor_affine(x, s, 0, lo, hi)
    # no gradient wanted: the fused op still builds its gradient mask and is ~10x slower on CPU
    # than these in-place passes, which give the same values (x * (1/s), round half to even)
    return x.mul(1.0 / s).round_().clamp_(lo, hi).mul_(s)


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
