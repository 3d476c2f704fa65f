"""Quantizing a model: :func:`quantize_model`, :func:`calibrate`, and HAQ's first/last-layer rule.

Calibration observes the **float** model: during the calibration pass every layer runs with its
float weight and float input, so a layer's activation range depends on the float model and the
calibration images only, never on the bits chosen for the other layers. This is what HAQ's
``calibrate`` does (its ``QModule`` in calibrate mode returns both the input and the weight
unquantized) and what PyTorch's post-training quantization does (observers on the float model),
and it is what makes a search cheap: the statistics are gathered once per distinct float model and
reused by every policy (:class:`~amc.quantization.QuantCache`), instead of one calibration pass per
episode.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.quantization.cache import ModelFingerprint, QuantCache
from amc.quantization.config import QuantConfig
from amc.quantization.observers import ACT_CALIBRATIONS, ActObserver, scale_from_observer
from amc.quantization.schemes import check_bits, check_choice, fake_quant_activation, quantization_error
from amc.quantization.wrapper import (
    QuantWrapper,
    observing_float,
    quantizable_layers,
    quantized_layers,
)
from amc.utils import eval_mode, model_device

logger = logging.getLogger(__name__)


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
    method = check_choice("activation calibration", method, ACT_CALIBRATIONS)
    method = cfg.act_method(b) if method == "auto" else method
    obs = ActObserver(**cfg.observer_options(b, method))
    for t in [x] if isinstance(x, torch.Tensor) else x:
        obs.observe(t)
    if obs.count == 0:
        raise AmcError("activation_scale got no data")
    return scale_from_observer(obs, b, method, percentile=cfg.percentile)


def activation_quantization_error(x: torch.Tensor, bits: int | None, *, method: str = "auto",
                                  config: QuantConfig | None = None) -> float:
    """Relative squared error of ``x`` fake-quantized with a scale calibrated on ``x`` itself."""
    if check_bits(bits, kind="activation") is None:
        return 0.0
    scale, signed = activation_scale(x, bits, method=method, config=config)
    return quantization_error(x, fake_quant_activation(x, bits, scale, signed))


def iter_batches(data: Any) -> Iterable[torch.Tensor]:
    """The input batches of ``data``: a tensor, or an iterable of tensors or ``(x, y)`` batches."""
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
    return _calibrate(qmodel, calibration, max_batches, cache, None)


def _calibrate(qmodel: nn.Module, calibration: Any, max_batches: int | None, cache: QuantCache | None,
               fp: ModelFingerprint | None) -> nn.Module:
    wrappers = {n: m for n, m in quantized_layers(qmodel).items() if m.a_bits is not None}
    if not wrappers:
        return qmodel
    if calibration is None:
        raise AmcError(f"layers {sorted(wrappers)[:5]}... quantize their input activations but no calibration "
                       "data was given; pass calibration=<a batch, or an iterable of batches>")
    limit = max_batches or max(m.config.calibration_batches for m in wrappers.values())
    batches = list(itertools.islice(iter_batches(calibration), limit))
    if not batches:
        raise AmcError("the calibration data yielded no batch; pass at least one input batch")
    needs = {n: m.config.observer_options(m.a_bits) for n, m in wrappers.items()}
    stats = cache.calibration((fp or ModelFingerprint(qmodel)).model, batches) if cache is not None else None
    observers, missing = (stats.observers, stats.missing(needs)) if stats else ({}, list(wrappers))
    if missing:  # one no-grad eval pass of the float model, observing the missing layers' inputs
        new = {n: ActObserver(**needs[n]) for n in missing}
        device = model_device(qmodel)
        with observing_float(qmodel, new), torch.no_grad():
            for x in batches:
                qmodel(x.to(device))
        observers.update(new)
    for n, m in wrappers.items():
        obs = observers.get(n)
        if obs is None or obs.count == 0:
            logger.warning("layer %r never ran during calibration; its input stays uncalibrated", n)
            continue
        method, pct = m.config.act_method(m.a_bits), m.config.percentile
        compute = functools.partial(scale_from_observer, obs, m.a_bits, method, percentile=pct)
        scale, signed = compute() if stats is None else stats.scale((n, m.a_bits, method, pct), compute)
        m.set_activation_range(scale, signed)
    return qmodel


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
            statistics and scales computed before for the same bytes are reused. The result is the
            same as without it.
    Returns the quantized model, weights already quantized and cached for evaluation.
    """
    cfg = config or QuantConfig()
    w_bits, a_bits, schemes = w_bits or {}, a_bits or {}, schemes or {}
    layers = quantizable_layers(model)
    named = set(w_bits) | set(a_bits) | set(schemes)
    unknown = sorted(n for n in named if n not in layers or n == "")
    if unknown:
        valid = sorted(n for n in layers if n)
        shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
        raise AmcError(f"unknown or non-quantizable layer name(s) {unknown}; quantizable Conv2d/Linear layers "
                       f"are: {shown}")
    checked = {n: (check_bits(w_bits.get(n), layer=n, kind="weight"),
                   check_bits(a_bits.get(n), layer=n, kind="activation"))
               for n in sorted(set(w_bits) | set(a_bits))}
    target = model if inplace else copy.deepcopy(model)
    for n, (wb, ab) in checked.items():
        layer = target.get_submodule(n)
        layer = layer.module if isinstance(layer, QuantWrapper) else layer
        if wb is not None or ab is not None:
            wrapper = QuantWrapper(layer, wb, ab, config=cfg, scheme=schemes.get(n), name=n)
            layer = wrapper.train(layer.training)
        target.set_submodule(n, layer)  # a float layer loses its wrapper
    fp = ModelFingerprint(target) if cache is not None else None
    if any(ab is not None for _, ab in checked.values()):
        _calibrate(target, calibration, cfg.calibration_batches, cache, fp)
    with torch.no_grad():
        for n, m in quantized_layers(target).items():
            if fp is None:
                m.quantized_weight()  # quantize once now, not on the first evaluated batch (float: no-op)
            elif m.w_bits is not None:
                cache.quantize_weight(m, fp.weight(n))
    return target


def first_last_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[str, str]:
    """Names of the first and the last ``Conv2d``/``Linear`` (or wrapper) to run, by one traced
    forward pass with hooks (execution order, not definition order). Modes are restored."""
    layers = quantizable_layers(model)
    if not layers:
        raise AmcError("the model has no Conv2d/Linear layer to quantize")
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: order.append(n)) for n, m in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            model(example_input.to(model_device(model)))
    finally:
        for h in handles:
            h.remove()
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
