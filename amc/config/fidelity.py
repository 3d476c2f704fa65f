"""``FidelityOptions``: everything ``amc fidelity`` takes, composed of the search's, fine-tuning's and benchmark's options.

The sections reuse the fields (default, description, bounds, everyday flag) and checks of
:mod:`amc.config.search`, :mod:`amc.config.train` and :mod:`amc.config.bench`, changing only what the
study sets otherwise (a required checkpoint, the CPU, one fine-tuning epoch, no budget band). Leaf
names are the flat keys of ``benchmarks.fidelity.FidelityConfig`` and of every study folder's
``config.json``, so those folders keep resuming.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from amc.config.bench import BenchFinetune, _NeedsCheckpoint
from amc.config.search import BitRange, DataConfig, EnvOptions, PathStr, RunConfig, _flag, _Section, section
from amc.config.train import Count, KDOptions, Precision, like

__all__ = ["DEFAULT_PROXIES", "FidelityOptions"]

#: the proxies scored when ``--proxies`` is not given (every concrete one, and 20 KD steps)
DEFAULT_PROXIES = ("vanilla", "bn", "reconstruct", "reconstruct+bn", "ft:20")

_DATA, _ENV, _RUN, _KD, _FT = (m.model_fields for m in (DataConfig, EnvOptions, RunConfig, KDOptions, BenchFinetune))
ImageCount = Annotated[Count, Field(ge=1)]


class FidelityData(_Section):
    checkpoint: PathStr | None = Field(None, description="the trained, uncompressed model (an amc train "
                                                         "checkpoint)", json_schema_extra=_flag("--checkpoint"))
    dataset: str = _DATA["dataset"]
    data_dir: PathStr | None = _DATA["data_dir"]
    val_size: int | float | None = like(_DATA["val_size"], flag="--val-size", description="held-out train images "
                                        "the scores use: a count or a fraction in (0, 1); none: the dataset's default")
    data_seed: int = like(_DATA["data_seed"], description="seed of the val holdout")


class FidelityEnv(_Section):
    """The budget and the space of the sampled policies: channels (``prune``), bits (``quant``) or both
    (``joint``)."""

    mode: Literal["prune", "quant", "joint"] = like(_ENV["mode"], description="what the sampled policies choose: "
                                                    "channels (prune), bit widths (quant) or both (joint)")
    target: str = like(_ENV["target"], description="budget of the sampled policies: macs=RATIO or params=RATIO; "
                       "with --mode quant/joint also size=RATIO or bitops=RATIO")
    lbound: float = like(_ENV["lbound"], flag="--lbound")
    round_to: int = like(_ENV["round_to"], flag="--round-to")
    importance: str = _ENV["importance"]
    w_bits: BitRange = like(_ENV["w_bits"], flag="--w-bits")
    a_bits: BitRange = like(_ENV["a_bits"], flag="--a-bits")

    @model_validator(mode="after")
    def _budget_fits_mode(self) -> FidelityEnv:
        from amc.policy import parse_target

        metric, _ = parse_target(self.target)
        allowed = {"prune": ("macs", "params"), "quant": ("size", "bitops"),
                   "joint": ("macs", "params", "size", "bitops")}[self.mode]
        if metric not in allowed:
            names = " or ".join(f"{m}=" for m in allowed)
            raise ValueError(f"--mode {self.mode} samples policies under a {names} budget, not {metric}= "
                             "(latency is measured per policy, not studied here)")
        return self


class FidelitySample(_Section):
    policies: Count = Field(16, description="policies to sample: the uniform one + random env episodes (+ --runs)",
                            json_schema_extra=_flag("--policies"))
    runs: list[PathStr] = Field(default_factory=list, description="search run dirs whose best_policy.json joins the "
                                "sample", json_schema_extra=_flag("--runs"))
    budget_band: float = like(_ENV["budget_band"], default=0.0, flag="--budget-band",
                              description="budget band of the random episodes (0: the env's one-sided clip)")

    @field_validator("policies")
    @classmethod
    def _two(cls, v: int) -> int:
        if v < 2:
            raise ValueError("a rank correlation needs at least 2 policies (16+ to mean much)")
        return v


class FidelityScore(_Section):
    proxies: list[str] = Field(list(DEFAULT_PROXIES), description="proxies to score with (vanilla, bn, reconstruct, "
                               "reconstruct+bn, ft:K)", json_schema_extra=_flag("--proxies"))
    calibration_size: int = like(_ENV["calibration_size"], flag="--calibration-size",
                                 description="train images of the proxies (norm statistics, reconstruction)")
    calibration_seed: Count = Field(0, ge=0, description="seed of the proxies' train images (and of the pruner)")
    eval_precisions: list[Precision] = Field(default_factory=list, description="also score in these precisions "
                                             "besides fp32, e.g. bf16", json_schema_extra=_flag("--eval-precisions"))
    calibration_sizes: list[ImageCount] = Field(default_factory=list, description="also score bn and reconstruct "
                                                "with these numbers of calibration images, e.g. 64,128,512",
                                                json_schema_extra=_flag("--calibration-sizes"))
    val_sizes: list[ImageCount] = Field(default_factory=list, description="also report fidelity at these prefixes of "
                                        "the val split, e.g. 500,1000", json_schema_extra=_flag("--val-sizes"))

    @field_validator("proxies")
    @classmethod
    def _concrete(cls, v: list[str]) -> list[str]:
        from amc.proxies import parse_proxy

        v = [parse_proxy(p).name for p in v]
        if not v or "auto" in v:
            raise ValueError("lists concrete proxies (vanilla, bn, reconstruct, reconstruct+bn, ft:K), not auto")
        return v


class FidelityFinetune(_Section):
    """The one fine-tuning schedule of every policy: KD from the uncompressed model, cosine decay."""

    epochs: Count = Field(1, ge=1, description="fine-tuning epochs per policy", json_schema_extra=_flag("--epochs"))
    ft_lr: float = like(_FT["ft_lr"], flag="--lr")
    ft_batch_size: int = like(_FT["ft_batch_size"], flag="--batch-size")
    kd_temperature: Annotated[float, Field(gt=0)] = _KD["kd_temperature"]  # KD is always on here
    kd_alpha: Annotated[float, Field(ge=0, le=1)] = _KD["kd_alpha"]
    ft_precision: Precision = _FT["ft_precision"]
    ft_channels_last: bool = _FT["ft_channels_last"]
    ft_test: bool = Field(True, description="also evaluate the test split after fine-tuning",
                          json_schema_extra=_flag("--test"))


class FidelityRun(_Section):
    seed: int = like(_RUN["seed"], description="seeds the sampled episodes and the fine-tuning")
    device: str = like(_RUN["device"], default="cpu")
    threads: int | None = _RUN["threads"]


class FidelityOptions(_NeedsCheckpoint):
    """A fidelity study: the model and data, the budget, the sample, the scores, the fine-tuning and the run."""

    data: FidelityData = section(FidelityData, "the checkpoint and the val holdout scored")
    env: FidelityEnv = section(FidelityEnv, "the budget and the space (channels, bits or both)")
    sample: FidelitySample = section(FidelitySample, "which policies are compared")
    score: FidelityScore = section(FidelityScore, "the proxies and their images")
    finetune: FidelityFinetune = section(FidelityFinetune, "the one fine-tuning schedule (KD from the "
                                                           "uncompressed model)")
    run: FidelityRun = section(FidelityRun, "seed, device and threads")
