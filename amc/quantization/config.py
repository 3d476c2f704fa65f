"""How weights and activations are quantized: :class:`QuantConfig` (the bits come per layer)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from amc.errors import AmcError
from amc.quantization.observers import calibration_names, get_calibration
from amc.quantization.schemes import LOW_BITS, WEIGHT_CLIPS, check_choice, get_scheme


@dataclass
class QuantConfig:
    """How weights and activations are quantized (the bits themselves come per layer).

    Attributes:
        per_channel: one weight scale per output channel (else one per layer). k-means always
            shares one codebook per layer.
        weight_scheme: a registered weight scheme: ``linear`` | ``binary`` (1 bit) | ``ternary``
            (2 bits) | ``kmeans`` (see :mod:`amc.quantization.schemes`).
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
    kl_below_bits: int = LOW_BITS
    hist_bins: int = 2048
    kmeans_iters: int = 10
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        self.weight_scheme = get_scheme(self.weight_scheme).name
        self.weight_clip = check_choice("weight_clip", self.weight_clip, WEIGHT_CLIPS)
        self.act_calibration = check_choice("act_calibration", self.act_calibration, calibration_names())
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

    def observer_options(self, bits: int, method: str | None = None) -> dict[str, Any]:
        """Keyword arguments of the :class:`~amc.quantization.observers.ActObserver` that calibrating
        ``bits``-bit activations by ``method`` (default: :meth:`act_method`) needs."""
        rule = get_calibration(method or self.act_method(bits))
        return {"bins": self.hist_bins, "histogram": rule.histogram, "abs_mean": bits == 1}
