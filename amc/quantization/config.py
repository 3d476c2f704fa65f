
"""How weights and activations are quantized: :class:`QuantOptions` (the one owner of the defaults and
checks) and :class:`QuantConfig`, its flat view (the bits come per layer)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from amc.config.flat import FlatConfig, flat_config
from amc.config.search import _Section
from amc.config.train import Count
from amc.quantization.observers import ACT_CALIBRATIONS, get_calibration
from amc.quantization.schemes import LOW_BITS, WEIGHT_CLIPS, check_choice, get_scheme

__all__ = ["QuantOptions", "QuantConfig"]


class QuantOptions(_Section):
    """How weights and activations are quantized (the bits themselves come per layer)."""

    per_channel: bool = Field(True, description="one weight scale per output channel (else one per layer); k-means "
                                                "always shares one codebook per layer")
    weight_scheme: str = Field("linear", description="a registered weight scheme: linear, binary (1 bit), ternary "
                                                     "(2 bits), kmeans (see amc.quantization.schemes)")
    weight_clip: str = Field("auto", description="linear scheme's clip: max (max|w|), mse (per-channel clip ratio in "
                                                 "(0, 1] minimising the squared error) or auto (mse below 5 bits, "
                                                 "max otherwise)")
    act_calibration: str = Field("auto", description="max, percentile, kl, mse or auto (kl below kl_below_bits bits, "
                                                     "max otherwise)")
    percentile: float = Field(99.99, gt=0, le=100, description="percentile of the non-zero |x| kept by the "
                                                               "percentile rule, in (0, 100]")
    kl_below_bits: Count = Field(LOW_BITS, ge=1, description="auto uses KL for activation bits strictly below this "
                                                             "(HAQ-style 5)")
    hist_bins: Count = Field(2048, ge=16, multiple_of=2, description="histogram bins of |x| for percentile/"
                                                                     "KL/MSE (even, >= 16; TensorRT: 2048)")
    kmeans_iters: Count = Field(10, ge=1, description="Lloyd iterations of the k-means weight sharing")
    calibration_batches: Count = Field(8, ge=1, description="at most this many calibration batches are read")

    @field_validator("weight_scheme")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        return get_scheme(v).name

    @field_validator("weight_clip")
    @classmethod
    def _known_clip(cls, v: str) -> str:
        return check_choice("weight_clip", v, WEIGHT_CLIPS)

    @field_validator("act_calibration")
    @classmethod
    def _known_calibration(cls, v: str) -> str:
        return check_choice("act_calibration", v, ACT_CALIBRATIONS)


class _QuantConfigBase(FlatConfig):
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


#: how weights and activations are quantized: one attribute per field of :class:`QuantOptions` (which owns
#: their defaults, descriptions and checks; a bad value raises ``AmcError``)
QuantConfig = flat_config("QuantConfig", QuantOptions, module=__name__, base=_QuantConfigBase,
                          keys="quantization options",
                          doc="How weights and activations are quantized: the fields of QuantOptions.")
