"""Tests of amc.quantization.config: QuantConfig validation and round trip."""

from __future__ import annotations

import pytest

from amc.errors import AmcError
from amc.quantization import QuantConfig


def test_config_validation() -> None:
    with pytest.raises(AmcError, match="valid: linear, binary, ternary, kmeans"):
        QuantConfig(weight_scheme="log")
    with pytest.raises(AmcError, match="valid: auto, max, percentile, kl"):
        QuantConfig(act_calibration="entropy")
    with pytest.raises(AmcError, match="percentile"):
        QuantConfig(percentile=0)
    assert QuantConfig().act_method(4) == "kl" and QuantConfig().act_method(5) == "max"
    assert QuantConfig.from_dict(QuantConfig(weight_scheme="kmeans").to_dict()).weight_scheme == "kmeans"


@pytest.mark.parametrize("bad", [{"hist_bins": 15}, {"hist_bins": 17}, {"kmeans_iters": 0}, {"calibration_batches": True},
                                 {"weight_clip": "kl"}])
def test_config_rejects(bad) -> None:
    with pytest.raises(AmcError, match=next(iter(bad))):
        QuantConfig(**bad)
    with pytest.raises(AmcError, match="unknown quantization options"):
        QuantConfig.from_dict({"bits": 4})


def test_observer_options_follow_the_rule() -> None:
    cfg = QuantConfig(hist_bins=256)
    assert cfg.observer_options(4) == {"bins": 256, "histogram": True, "abs_mean": False}  # auto -> kl
    assert cfg.observer_options(8) == {"bins": 256, "histogram": False, "abs_mean": False}  # auto -> max
    assert cfg.observer_options(1, "max")["abs_mean"] is True


def test_defaults_and_checks_come_from_quant_options() -> None:
    import dataclasses

    from amc.quantization.config import QuantOptions

    assert QuantConfig().to_dict() == QuantOptions().model_dump()
    assert [f.name for f in dataclasses.fields(QuantConfig)] == list(QuantOptions.model_fields)
    with pytest.raises(AmcError) as err:
        QuantConfig(hist_bins=17, kmeans_iters=0)
    msg = str(err.value)
    assert msg.startswith("QuantConfig: ") and "\n" not in msg and "hist_bins=17" in msg and "kmeans_iters=0" in msg
    assert QuantConfig(weight_scheme="KMeans", weight_clip="MSE").to_dict()["weight_scheme"] == "kmeans"
