"""``SearchOptions``: everything ``amc search`` takes, one typed model composed of five sections.

Each field's description is its ``--help`` text and its default is the one default of that option
(``agents.search.SearchConfig``, the flat view the search code uses, and ``envs.EnvConfig`` take
theirs from here). Names are unique across sections, so a flat file (``episodes: 400``) is read into
its sections (``agent.episodes``), and a section given a name (``model: lenet5``) sets its ``name``.
Registry names (models, datasets, agents, rewards, importances) are checked against the registries,
which users extend, so they are strings rather than ``Literal`` choices.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = ["QUICKSTART", "quickstart", "quickstart_path", "DataConfig", "ModelConfig", "EnvShared", "EnvOptions",
           "AgentOptions", "RunConfig", "SearchOptions"]


PathStr = Annotated[str, BeforeValidator(lambda v: os.fspath(v) if isinstance(v, os.PathLike) else v)]
#: an open mapping of options; an empty YAML key (``env_kwargs:``) is no options
Options = Annotated[dict[str, Any], BeforeValidator(lambda v: {} if v is None else v)]


def _bit_range(v: tuple[int, int]) -> tuple[int, int]:
    if not 1 <= v[0] <= v[1] <= 8:  # the quantizers: at most 8 bits (32 = float is the uncompressed layer)
        raise ValueError("must satisfy 1 <= min <= max <= 8, e.g. 2 8")
    return v


#: a bit range MIN MAX of the quantizers
BitRange = Annotated[tuple[int, int], AfterValidator(_bit_range)]
#: precisions of training and evaluation (the keys of ``amc.training.PRECISIONS``)
Precision = Literal["fp32", "bf16", "fp16"]


def _flag(name: str) -> dict[str, Any]:
    return {"flag": name}


def _by(check: str, keep: Callable[[Any, Any], Any] = lambda v, _: v) -> AfterValidator:
    """A value checked by ``check`` (``module:name``: a parser or a registry's ``get``, imported when first
    used), whose ``ValueError`` names the valid values; ``keep(value, parsed)`` is what the field keeps."""
    module, name = check.split(":")
    return AfterValidator(lambda v: keep(v, attrgetter(name)(importlib.import_module(module))(v)))


def _positive(v: int | float | None) -> int | float | None:
    if v is not None and not v > 0:
        raise ValueError("must be a count (>= 1) or a fraction in (0, 1): the reward is measured on these "
                         "held-out images (leave it out for the dataset's default)")
    return v


#: the checks that every model with such a field reuses (fields copied with ``like`` keep them)
Target = Annotated[str, _by("amc.policy:parse_target")]
Proxy = Annotated[str, _by("amc.proxies:parse_proxy", lambda v, proxy: proxy.name)]
Importance = Annotated[str, _by("amc.pruning:IMPORTANCES.get")]
Reward = Annotated[str, _by("envs:REWARDS.get")]
Dataset = Annotated[str, _by("amc.data:DATASETS.get", lambda v, _: v.lower())]
Device = Annotated[str, _by("amc.utils:resolve_device")]
AgentName = Annotated[str, _by("agents._base:AGENTS.get", lambda v, _: v.lower())]
ValSize = Annotated[int | float | None, AfterValidator(_positive)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def section(model: type[BaseModel], description: str | None = None) -> Any:
    """A field holding the section ``model`` at its defaults; ``description`` heads its ``--help`` group."""
    return Field(default_factory=model, description=description)


class DataConfig(_Section):
    dataset: Dataset = Field("digits", description="digits, fashion-mnist, cifar10, imagefolder",
                             json_schema_extra=_flag("--dataset"))
    data_dir: PathStr | None = Field(None, description="where the dataset's files are", json_schema_extra=_flag("--data-dir"))
    val_size: ValSize = Field(
        None, description="held-out train images the reward is measured on: a count or a fraction in (0, 1); "
                          "none: the dataset's default")
    data_seed: int = Field(0, ge=0, description="seed of the val holdout and of the brief pretraining (kept apart "
                                                "from --seed, so that searches with other seeds see the same model)")

class ModelConfig(_Section):
    name: str | None = Field(None, description="architecture (lenet5, resnet20, ..., torchvision:<name>, "
                                               "package.module:factory); may be omitted with --checkpoint",
                             json_schema_extra=_flag("--model"))
    model_kwargs: Options = Field(default_factory=dict, description="extra arguments of the model factory "
                                                                    "(e.g. width_mult=0.5)")
    checkpoint: PathStr | None = Field(None, description="trained `amc train` checkpoint; without it the model is "
                                                         "trained briefly first", json_schema_extra=_flag("--checkpoint"))
    train_epochs: int = Field(10, ge=0, description="epochs of the brief pretraining without --checkpoint "
                                                    "(run_dir/pretrain, reused on resume)")

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        from amc.models import MODELS

        if v is not None and not v.strip():
            raise ValueError("must be a model name such as lenet5 or resnet20")
        if v is not None and ":" not in v and v.lower() not in MODELS:
            raise ValueError(f"unknown model {v!r}; valid: {', '.join(MODELS.names())} "
                             "(or torchvision:<name>, package.module:factory)")
        return v


class EnvShared(_Section):
    """The options ``amc search`` shares with the env: what is searched and how a policy is scored
    (:class:`EnvOptions` adds ``env_kwargs``; :class:`amc.config.env.EnvSettings` the env-only options)."""

    mode: Literal["prune", "quant", "joint"] = Field(
        "prune", description="channel pruning, mixed precision, or both", json_schema_extra=_flag("--mode"))
    target: Target = Field(
        "macs=0.5", description="hard budget METRIC=RATIO of the float32 model: macs, params, size, bitops, "
                                "latency", json_schema_extra=_flag("--target"))
    reward: Reward = Field("acc", description="reward name (acc, acc_flops, acc_size, acc_latency)")
    lbound: float = Field(0.2, gt=0, le=1, description="smallest preserve ratio per layer (AMC: 0.2)")
    round_to: int = Field(1, ge=1, description="round kept channels to a multiple of this (e.g. 8)")
    granularity: Literal["channel", "fine"] = Field("channel", description="structured channels or unstructured "
                                                                           "weights")
    importance: Importance = Field("l1", description="channel criterion: l1, l2, fpgm, bn_scale, random")
    proxy: Proxy = Field(
        "auto", description="what is done to each compressed model before it is scored: auto (bn with "
                            "BatchNorm, else reconstruct), vanilla, bn, reconstruct, reconstruct+bn, "
                            "ft:K (K KD steps)",
        json_schema_extra=_flag("--proxy"))
    reconstruct: bool | None = Field(None, description="older switch: true is proxy reconstruct, false proxy vanilla")
    calibration_size: int = Field(256, ge=1, description="train images of the proxy (norm statistics, "
                                                         "reconstruction; fixed seed)")
    budget_band: float = Field(0.02, ge=0, lt=1, description="end every episode within [target x (1 - band), "
                                                             "target] (0: AMC's one-sided clip)")
    w_bits: BitRange = Field((2, 8), description="weight bit range MIN MAX (quant/joint)")
    a_bits: BitRange = Field((2, 8), description="activation bit range MIN MAX (quant/joint)")
    eval_batch_size: int = Field(512, ge=1, description="batch size of the reward's evaluation")
    eval_precision: Precision = Field(
        "fp32", description="precision of the reward's evaluation (mode prune): bf16 is ~2.8x faster per episode on "
                            "CPUs with AVX-512 BF16/AMX; amc apply re-measures the policy in fp32")


class EnvOptions(EnvShared):
    """What is searched and how a policy is scored (``envs.EnvConfig``, which adds the env-only options)."""

    env_kwargs: Options = Field(default_factory=dict, description="further envs.EnvConfig option (repeatable)",
                                json_schema_extra=_flag("--env-opt"))


class AgentOptions(_Section):
    name: AgentName = Field(
        "ddpg", description="search agent: ddpg, or a baseline (tpe, cmaes, gp, random, nsga2, motpe, "
                            "uniform, sensitivity, preset:deep, ...)", json_schema_extra=_flag("--agent"))
    episodes: int = Field(400, ge=1, description="episodes in all (a resumed run continues up to this)",
                          json_schema_extra=_flag("--episodes"))
    warmup: int = Field(100, ge=0, description="random warm-up episodes (AMC: 100, HAQ: 20)",
                        json_schema_extra=_flag("--warmup"))
    final_reward_to_all: bool = Field(True, description="give every transition the episode's final reward (AMC)")
    noise_sigma: float = Field(0.5, ge=0, allow_inf_nan=False,
                               description="initial exploration sigma in action units (AMC: 0.5)")
    noise_decay: float = Field(0.95, gt=0, le=1, description="sigma decay per episode after warm-up (AMC: 0.95)")
    warm_start: PathStr | None = Field(None, description="ddpg: start from this policy (a run dir's best_policy.json, "
                                                         "a policy JSON, or 'uniform': the uniform policy at the "
                                                         "budget): it and a few noisy neighbours are the first "
                                                         "episodes")
    agent_kwargs: Options = Field(default_factory=dict, description="agent option, repeatable (ddpg: actor_lr, "
                                                                    "critic_lr, tau, gamma, batch_size, hidden, ...)",
                                  json_schema_extra=_flag("--agent-opt"))

    @field_validator("agent_kwargs")
    @classmethod
    def _agent_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from agents._base import AGENTS

        name = info.data.get("name")
        options = getattr(AGENTS.get(name), "options", None) if name else None
        if options is not None:
            options.from_dict(v, agent=name)  # the agent's own check, before any work is done
        return v


class RunConfig(_Section):
    seed: int = Field(0, ge=0, description="seed of the search", json_schema_extra=_flag("--seed"))
    device: Device = Field("auto", description="auto, cpu, cuda, cuda:N, mps",
                           json_schema_extra=_flag("--device"))
    threads: int | None = Field(None, ge=1, description="torch CPU threads (none: torch's default)",
                                json_schema_extra=_flag("--threads"))
    run_dir: PathStr = Field("runs/search", min_length=1, description="output directory (config, policy, TensorBoard, "
                                                                      "checkpoints, summary)",
                             json_schema_extra=_flag("--run-dir"))
    resume: bool = Field(False, description="continue the search in RUN_DIR (or --run-dir) with the config it saved",
                         json_schema_extra={"flag": "--resume", "cli": False})
    overwrite: bool = Field(False, description="discard what --run-dir holds", json_schema_extra=_flag("--overwrite"))
    checkpoint_every: int = Field(10, ge=1, description="episodes between checkpoints")


class SearchOptions(_Section):
    """A compression search: data, model, environment, agent and run."""

    data: DataConfig = section(DataConfig, "the dataset and the val holdout the reward is measured on")
    model: ModelConfig = section(ModelConfig, "the model to compress (a checkpoint, or trained briefly "
                                              "first)")
    env: EnvOptions = section(EnvOptions, "what is searched, under which budget, and how a policy is scored")
    agent: AgentOptions = section(AgentOptions, "the search agent and its exploration")
    run: RunConfig = section(RunConfig, "the run directory, seeds, device and checkpoints")

    @model_validator(mode="after")
    def _consistent(self) -> SearchOptions:
        if self.model.name is None and self.model.checkpoint is None:
            raise ValueError("give a model (e.g. --model lenet5) or a trained --checkpoint")
        if self.model.checkpoint is None and self.model.train_epochs < 1:
            raise ValueError("train_epochs must be >= 1 without a checkpoint (the model is trained briefly first)")
        if self.agent.warm_start is not None:
            if self.agent.name != "ddpg":
                raise ValueError(f"warm_start is a ddpg option (agent is {self.agent.name!r})")
            src = Path(self.agent.warm_start)
            is_policy = (src / "best_policy.json").is_file() or (src.is_file() and src.suffix == ".json")
            if self.agent.warm_start != "uniform" and not is_policy:
                raise ValueError(f"warm_start={str(src)!r}: give a run dir holding best_policy.json, a policy "
                                 ".json file, or 'uniform'")
        if self.run.resume and self.run.overwrite:
            raise ValueError("resume and overwrite exclude each other: --resume continues run_dir, --overwrite "
                             "discards it")
        return self


def quickstart_path() -> Path:
    """The quickstart preset, ``amc/config/quickstart.yaml`` (``configs/quickstart.yaml`` links to it)."""
    return Path(__file__).resolve().with_name("quickstart.yaml")


def quickstart() -> dict[str, Any]:
    """The quickstart preset's keys (a fresh copy)."""
    return copy.deepcopy(QUICKSTART)


#: the quickstart preset (flat keys), the base of ``amc search`` without ``--config``
QUICKSTART: dict[str, Any] = yaml.safe_load(quickstart_path().read_text())
