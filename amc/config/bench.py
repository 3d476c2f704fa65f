"""``BenchOptions``: everything ``amc bench`` takes, composed of the search's and fine-tuning's options.

The sections reuse the fields (default, description, bounds, everyday flag) and checks of
:mod:`amc.config.search` and :mod:`amc.config.train`, changing only what the benchmark sets otherwise
(30 episodes, fine-tuning for 120 steps, one thread on the CPU). Leaf names are the flat keys of
``benchmarks.suite.BenchConfig`` and of every benchmark folder's ``bench_config.json``, so those
folders keep resuming. :data:`PRESETS` are the ``--quick`` and ``--full`` scales.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from amc.config.search import AgentName, AgentOptions, EnvOptions, PathStr, RunConfig, _Section, section
from amc.config.train import Count, FinetuneTrainOptions, KDOptions, Precision, like

__all__ = ["PRESETS", "BenchOptions"]

#: preset name -> BenchConfig fields. ``quick``: ~10 minutes for ResNet-20 on 2 shared CPU cores (the
#: KD fine-tuning, ~1 s per step there, dominates: 3 x 120 steps; 200 steps made it ~14.5 min at load 5-7);
#: ``full``: AMC's CIFAR setting where a CPU allows it (5,000 val images, 100 warm-up episodes), hours.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"episodes": 30, "warmup": 10, "reward_val": 1000, "test_size": 2000, "ft_epochs": 1,
              "ft_steps_per_epoch": 120, "latency_min_time_s": 1.0, "latency_rounds": 3},
    "full": {"episodes": 300, "warmup": 100, "reward_val": None, "test_size": None, "ft_epochs": 5,
             "ft_steps_per_epoch": None, "latency_min_time_s": 5.0, "latency_rounds": 3},
}

_ENV, _AGENT, _RUN, _FT = (m.model_fields for m in (EnvOptions, AgentOptions, RunConfig, FinetuneTrainOptions))


def _all(v: Any) -> Any:
    return None if isinstance(v, str) and v.strip().lower() in ("all", "none") else v


def _names(v: Any) -> Any:
    return str(v).replace(",", " ").split() if isinstance(v, (int, str)) else v


AllOrCount = Annotated[Annotated[Count, Field(ge=1)] | None, BeforeValidator(_all)]


class BenchData(_Section):
    checkpoint: PathStr | None = Field(None, description="the trained, uncompressed model (amc train's final.pt; "
                                                         "required)", json_schema_extra={"flag": "--checkpoint"})
    dataset: str | None = Field(None, description="dataset name (none: the checkpoint's)",
                                json_schema_extra={"flag": "--dataset"})
    data_dir: PathStr | None = Field(None, description="where the dataset is (none: the checkpoint's)",
                                     json_schema_extra={"flag": "--data-dir"})
    val_size: Count | None = Field(None, ge=0, description="val holdout size (none: the checkpoint's holdout, so "
                                                           "that no val image was trained on)",
                                  json_schema_extra={"flag": "--val-size"})
    data_seed: Count | None = Field(None, ge=0, description="seed of the val holdout (none: the checkpoint's)")
    reward_val: AllOrCount = Field(1000, description="val images of the searches' reward, the first of the shuffled "
                                                     "holdout (a count or all; AMC: 5,000 on CIFAR)",
                                   json_schema_extra={"flag": "--reward-val"})
    test_size: AllOrCount = Field(2000, description="test images evaluated (a count or all)",
                                  json_schema_extra={"flag": "--test-size"})


class BenchSearch(_Section):
    agents: Annotated[tuple[AgentName, ...], BeforeValidator(_names)] = Field(
        ("uniform", "ddpg", "tpe"), description="agents to compare", json_schema_extra={"flag": "--agents"})
    episodes: int = like(_AGENT["episodes"], default=30, description="evaluations of each searching agent")
    warmup: int = like(_AGENT["warmup"], default=10, description="random warm-up evaluations (DDPG's warm-up "
                                                                  "and the Optuna samplers' start-up trials)")
    uniform_max_evaluations: Count = Field(64, ge=1, description="cap on a bisecting baseline's probes")
    seed: int = like(_RUN["seed"], description="seed of the searches and the fine-tuning")

    @field_validator("agents")
    @classmethod
    def _known_agents(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("is empty; e.g. uniform ddpg tpe")
        if len(set(v)) != len(v):
            raise ValueError(f"names one agent twice: {list(v)}")
        return v


class BenchEnv(_Section):
    target: str = _ENV["target"]
    lbound: float = _ENV["lbound"]
    round_to: int = like(_ENV["round_to"], flag="--round-to")
    importance: str = _ENV["importance"]
    reconstruct: bool = like(_ENV["reconstruct"], default=False, flag="--reconstruct",
                              description="older switch for --proxy reconstruct")
    proxy: str = _ENV["proxy"]
    calibration_size: int = like(_ENV["calibration_size"], flag="--calibration-size")
    budget_band: float = like(_ENV["budget_band"], flag="--budget-band")
    eval_precision: Precision = like(_ENV["eval_precision"], flag="--eval-precision",
                                      description="precision of the searches' reward (val/test top-1 stay fp32)")


class BenchFinetune(KDOptions):
    ft_seeds: Annotated[tuple[int, ...], BeforeValidator(_names)] = Field(
        (0,), description="fine-tune each best policy once per seed (mean +- std)", json_schema_extra={"flag": "--ft-seeds"})
    ft_epochs: Count = Field(1, ge=0, description="fine-tuning epochs (0: no fine-tuning)",
                             json_schema_extra={"flag": "--ft-epochs"})
    ft_steps_per_epoch: AllOrCount = Field(120, description="fine-tuning steps per epoch (a count or all)",
                                           json_schema_extra={"flag": "--ft-steps"})
    ft_lr: float = like(_FT["lr"], flag="--ft-lr")
    ft_batch_size: int = like(_FT["batch_size"], flag=None)
    ft_precision: Precision = like(_FT["precision"], flag="--ft-precision",
                                    description="fine-tuning precision (bf16 + channels-last is ~2x faster on "
                                                "AVX-512 BF16/AMX CPUs)")
    ft_channels_last: bool = like(_FT["channels_last"], flag="--ft-channels-last")

    @field_validator("ft_seeds")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError("must list distinct seeds, e.g. 0 1 2")
        return v


class BenchLatency(_Section):
    latency_threads: Count = Field(1, ge=1, description="threads of the latency measurements",
                                   json_schema_extra={"flag": "--latency-threads"})
    latency_batches: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        (1, 64), description="batch sizes timed (empty: no latency stage)", json_schema_extra={"flag": "--latency-batches"})
    latency_min_time_s: float = Field(1.0, ge=0, allow_inf_nan=False, description="seconds of timed runs per model, "
                                      "batch and round", json_schema_extra={"flag": "--latency-time"})
    latency_rounds: Count = Field(3, ge=1, description="interleaved rounds (the median over rounds)",
                                  json_schema_extra={"flag": "--latency-rounds"})


class BenchRun(_Section):
    threads: int | None = like(_RUN["threads"], default=1, description="torch CPU threads of searches and "
                                                                        "fine-tuning")
    device: str = like(_RUN["device"], default="cpu", description="device of searches and fine-tuning (latency is "
                                                                   "always measured on the CPU)")
    extras: dict[str, str] | None = Field(None, description="name (int8, transfer) -> JSON file of scripts/bench_*.py "
                                                            "to include (none: the usual places)")
    preset: Literal["quick", "full"] | None = Field(None, description="the scale the other options start from",
                                                    json_schema_extra={"cli": False})


class _NeedsCheckpoint(_Section):
    """Options whose ``data.checkpoint`` is required (``amc bench``, ``amc fidelity``)."""

    @model_validator(mode="after")
    def _checkpoint(self) -> Any:
        if not (self.data.checkpoint or "").strip():  # type: ignore[attr-defined]
            raise ValueError("checkpoint is required: the trained, uncompressed model (amc train's final.pt)")
        return self


class BenchOptions(_NeedsCheckpoint):
    """A benchmark: the model and data, the searches, their env, the fine-tuning, latency and the run."""

    data: BenchData = section(BenchData, "the checkpoint and the images scored")
    search: BenchSearch = section(BenchSearch, "the agents, at equal evaluations")
    env: BenchEnv = section(BenchEnv, "what the searches search, and how they score")
    finetune: BenchFinetune = section(BenchFinetune, "KD fine-tuning of each best policy")
    latency: BenchLatency = section(BenchLatency, "CPU latency of the compressed models")
    run: BenchRun = section(BenchRun, "threads, device, extras")
