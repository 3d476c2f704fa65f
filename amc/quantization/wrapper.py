"""The quantized layer: :class:`QuantWrapper` around a ``Conv2d``/``Linear``, and finding layers.

Straight-through estimator: the gradient w.r.t. the float master weight passes straight through
(``w + (q(w) - w).detach()``); inputs use :func:`torch.fake_quantize_per_tensor_affine`, whose
gradient is 1 inside the clip range and 0 outside. The quantized weight is cached and recomputed
only when the float weight changes (every optimizer step in QAT; never while evaluating), so that
the search's ``quantize_model`` + evaluate loop pays for weight quantization once per call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from amc.errors import AmcError
from amc.quantization.config import QuantConfig
from amc.quantization.observers import ActObserver
from amc.quantization.schemes import QuantizedWeight, check_bits, fake_quant_activation, get_scheme
from amc.utils import eval_mode


class QuantWrapper(nn.Module):
    """A ``Conv2d``/``Linear`` that quantizes its input activation and its weight on the fly.

    The float weight stays in ``self.module.weight`` (the master copy QAT updates); its quantized
    version is cached until it changes (in place, replaced or moved), and gradients reach it by the
    straight-through estimator.

    Args:
        module: the ``nn.Conv2d`` or ``nn.Linear`` to wrap (kept, not copied).
        w_bits: weight bits 1..8, or None/32 for float weights.
        a_bits: input-activation bits 1..8, or None/32 for a float input. Needs calibration
            (:func:`amc.quantization.calibrate`).
        config: how to quantize (defaults to ``QuantConfig()``).
        scheme: weight scheme overriding ``config.weight_scheme`` for this layer.
        name: the layer's name, for messages.
    """

    #: set by :func:`observing_float` for the calibration pass: run the float layer (float weight,
    #: float input), feeding the input to ``observer`` when there is one (a class default, so that
    #: wrappers pickled by older versions load too)
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
        sch = get_scheme(scheme or self.config.weight_scheme)
        if self.w_bits is not None:
            sch.check_bits(self.w_bits, self.name)
        self.scheme = sch.name
        self.act_scale: float | None = None
        self.act_signed = True
        self.observer: ActObserver | None = None
        self.clear_cache()

    # -- weights -----------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget the quantized weight (it is recomputed when next needed); loaded codes too."""
        self._cache: QuantizedWeight | None = None
        self._cache_deq: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._pinned = False  # the cache is authoritative (loaded codes), until QAT changes weights

    @property
    def pinned(self) -> bool:
        """Whether the cached codes were loaded (:meth:`pin_quantized_weight`), not computed here."""
        return self._pinned

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
        cfg, sch = self.config, get_scheme(self.scheme)
        sch.check_bits(self.w_bits, self.name)
        with torch.no_grad():
            qw = sch.encode(w.detach().float(), self.w_bits, per_channel=cfg.per_channel,
                                                clip=cfg.weight_clip, kmeans_iters=cfg.kmeans_iters)
            self._cache, self._cache_deq, self._cache_key = qw, qw.dequantize(w.dtype), key
        return qw

    def dequantized_weight(self) -> torch.Tensor | None:
        """The float values of :meth:`quantized_weight` (cached with it), or None for float weights."""
        return None if self.quantized_weight() is None else self._cache_deq

    def use_quantized(self, qw: QuantizedWeight, deq: torch.Tensor) -> None:
        """Use already computed codes of exactly the current weight (a cache hit), and ``deq``,
        their :meth:`QuantizedWeight.dequantize` in the weight's dtype and device."""
        self._cache, self._cache_deq, self._cache_key = qw, deq, self._key(self.module.weight)
        self._pinned = False

    def pin_quantized_weight(self, qw: QuantizedWeight) -> None:
        """Use ``qw`` as this layer's quantized weight (and its dequantized values as the float
        weight) until the weight changes: how a loaded model keeps the exact stored codes
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
        deq = self.dequantized_weight()
        if torch.is_grad_enabled() and w.requires_grad:
            return w + (deq - w).detach()
        return deq

    # -- activations ---------------------------------------------------------------------------
    def set_activation_range(self, scale: float, signed: bool) -> None:
        if not (scale > 0 and math.isfinite(scale)):
            raise AmcError(f"layer {self.name!r}: activation scale must be positive, got {scale}")
        self.act_scale, self.act_signed = float(scale), bool(signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._float_pass:  # calibration observes the float model
            if self.observer is not None:
                self.observer.observe(x)
            return layer_forward(self.module, x, self.module.weight)
        if self.a_bits is not None:
            if self.act_scale is None:
                raise AmcError(f"layer {self.name!r} quantizes its input to {self.a_bits} bits but was never "
                               "calibrated; pass calibration= to quantize_model or call calibrate(model, batches)")
            x = fake_quant_activation(x, self.a_bits, self.act_scale, self.act_signed)
        return layer_forward(self.module, x, self.effective_weight())

    # -- state ---------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"w_bits": self.w_bits, "a_bits": self.a_bits, "scheme": self.scheme,
                "act_scale": self.act_scale, "act_signed": self.act_signed, "name": self.name,
                "config": self.config.to_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.config = QuantConfig.from_dict(state.get("config", {}))
        self.w_bits = check_bits(state.get("w_bits"), layer=self.name, kind="weight")
        self.a_bits = check_bits(state.get("a_bits"), layer=self.name, kind="activation")
        self.scheme = get_scheme(state.get("scheme", self.config.weight_scheme)).name
        self.act_scale = state.get("act_scale")
        self.act_signed = bool(state.get("act_signed", True))
        self.name = state.get("name", self.name)
        self._cache_key, self._pinned = None, False

    def extra_repr(self) -> str:
        act = "float" if self.a_bits is None else f"{self.a_bits}{'s' if self.act_signed else 'u'}"
        w = "float" if self.w_bits is None else f"{self.w_bits} ({self.scheme})"
        return f"w_bits={w}, a_bits={act}"


def layer_forward(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """What the ``nn.Conv2d`` or ``nn.Linear`` ``layer`` computes on ``x`` with ``weight`` as its weight."""
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, layer.bias)  # as nn.Conv2d.forward (padding modes too)
    return F.linear(x, weight, layer.bias)


@contextlib.contextmanager
def observing_float(model: nn.Module, observers: Mapping[str, ActObserver]) -> Iterator[None]:
    """Run ``model`` (in eval mode) as the float model it wraps, every wrapper with its float weight
    on its float input, feeding the inputs of the wrappers named in ``observers`` to them."""
    wrappers = quantized_layers(model)
    try:
        for n, m in wrappers.items():
            m._float_pass, m.observer = True, observers.get(n)
        with eval_mode(model):
            yield
    finally:
        for m in wrappers.values():
            m._float_pass, m.observer = False, None


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Quantizable layers by name: wrappers, and ``Conv2d``/``Linear`` not inside a wrapper."""
    wrapped = {id(w.module) for w in quantized_layers(model).values()}
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (QuantWrapper, nn.Conv2d, nn.Linear)) and id(m) not in wrapped}


def quantized_layers(model: nn.Module) -> dict[str, QuantWrapper]:
    """The :class:`QuantWrapper` modules of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantWrapper)}
