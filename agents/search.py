"""``SearchConfig`` (everything ``amc search`` takes) and ``run_search`` (data -> model -> env -> agent).

A search run lives in its own directory (``run_dir``)::

    config.yaml, episodes.csv, best_policy.json/.png, summary.json, search/ (TensorBoard; agents._recorder)
    checkpoint/       the agent's resumable state (every ``checkpoint_every`` episodes and on Ctrl-C)
    pretrain/         the brief pretraining (``final.pt``), when no ``checkpoint`` was given
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from agents._base import AGENTS, stop_on_signals
from agents._recorder import SearchRecorder, read_episodes
from amc.errors import AmcError
from amc.policy import GRANULARITIES, MODES, checkpoint_record, data_record, parse_target
from amc.rundir import locked_run_dir
from amc.utils import resolve_device, seed_everything

__all__ = ["SearchConfig", "run_search", "QUICKSTART", "load_search_config"]

logger = logging.getLogger(__name__)

#: the quickstart preset (``configs/quickstart.yaml`` holds the same; used when that file is absent)
QUICKSTART: dict[str, Any] = {
    "model": "lenet5",
    "dataset": "digits",
    "train_epochs": 150,
    "mode": "prune",
    "target": "macs=0.5",
    "reward": "acc",
    "agent": "ddpg",
    "episodes": 300,
    "warmup": 50,
    "noise_decay": 0.99,
    "seed": 0,
    "device": "cpu",
    "run_dir": "runs/quickstart",
}

#: keys that may differ between the sessions of one run (everything else must match to --resume)
_SESSION_KEYS = frozenset({"episodes", "resume", "overwrite", "device", "threads", "run_dir", "checkpoint_every"})
PRETRAIN_DIR = "pretrain"


@dataclass
class SearchConfig:
    """A compression search; checks itself on construction (``AmcError`` saying what to pass instead).

    Model and data:
        model: architecture name (``amc.models.MODELS``, ``torchvision:<name>``, ``pkg.mod:factory``);
            may be omitted with ``checkpoint`` (the checkpoint knows its model).
        model_kwargs: extra factory arguments (e.g. ``{"width_mult": 0.5}``).
        checkpoint: a trained ``amc train`` checkpoint; without it the model is trained for
            ``train_epochs`` epochs first (``run_dir/pretrain/final.pt``, reused on resume).
        dataset, data_dir, val_size: ``amc.data.get_dataset`` arguments; the reward's accuracy is
            measured on the val split (a count, or a fraction in (0, 1); None: the dataset default).
        data_seed: seed of the val holdout and of the brief pretraining; separate from ``seed`` so
            that searches with different seeds compress the same model on the same val images.
    Environment (``envs.EnvConfig``):
        mode: ``prune`` | ``quant`` | ``joint``; target: budget ``METRIC=RATIO`` (e.g. ``macs=0.5``);
        reward: name in ``envs.REWARDS``; lbound: smallest preserve ratio in (0, 1] (AMC 0.2);
        round_to: channel multiple (1 or e.g. 8); granularity: ``channel`` | ``fine``;
        importance: channel criterion (``amc.pruning.IMPORTANCES``); proxy: what is done to each
        compressed model before it is scored (``amc.proxies``: auto, vanilla, bn, reconstruct,
        reconstruct+bn, ft:K); reconstruct: older spelling of ``proxy="reconstruct"``;
        calibration_size: train images of the proxy; budget_band: end every episode within
        ``[target (1 - band), target]`` (default 0.02: DDPG found a policy 2.6 points better by the
        score on the ResNet-20 reference than with AMC's one-sided clip, 0); w_bits, a_bits: (min, max) bit widths (quant/joint);
        eval_batch_size: batch size of the reward's evaluation; eval_precision: ``fp32``, or ``bf16`` /
        ``fp16`` autocast for the reward (mode ``prune``; 2.8x faster ResNet-20 episodes on AVX-512 BF16 / AMX CPUs; the
        shipped policy is re-measured in fp32); env_kwargs: further EnvConfig fields.
    Search:
        agent: name in ``agents.AGENTS``; episodes: episodes in all; warmup: random warm-up episodes
        (AMC 100, HAQ 20); seed; final_reward_to_all: AMC's reward copying (DDPG);
        noise_sigma, noise_decay: exploration noise (AMC 0.5, x0.95 per episode);
        agent_kwargs: agent-specific options (e.g. ``agents.ddpg.DDPGConfig`` fields);
        warm_start: (ddpg) a run dir (its ``best_policy.json``) or a policy JSON whose episode and
        noisy neighbours are the first episodes, so they fill the replay buffer before exploration.
    Run:
        run_dir; resume: continue the run in ``run_dir`` from its checkpoint; overwrite: discard what
        ``run_dir`` holds; checkpoint_every: episodes between checkpoints; device: ``auto``/``cpu``/
        ``cuda``...; threads: torch CPU threads (None: torch's default); train_epochs.
    """

    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    val_size: int | float | None = None
    data_seed: int = 0
    mode: str = "prune"
    target: str = "macs=0.5"
    reward: str = "acc"
    lbound: float = 0.2
    round_to: int = 1
    granularity: str = "channel"
    importance: str = "l1"
    proxy: str = "auto"
    reconstruct: bool | None = None
    calibration_size: int = 256
    budget_band: float = 0.02
    w_bits: tuple[int, int] = (2, 8)
    a_bits: tuple[int, int] = (2, 8)
    eval_batch_size: int = 512
    eval_precision: str = "fp32"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    agent: str = "ddpg"
    episodes: int = 400
    warmup: int = 100
    seed: int = 0
    final_reward_to_all: bool = True
    noise_sigma: float = 0.5
    noise_decay: float = 0.95
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    warm_start: str | None = None
    run_dir: str = "runs/search"
    resume: bool = False
    overwrite: bool = False
    checkpoint_every: int = 10
    device: str = "auto"
    threads: int | None = None
    train_epochs: int = 10

    def __post_init__(self) -> None:
        def bad(msg: str) -> AmcError:
            return AmcError(f"search config: {msg}")

        def as_int(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v) or int(v) < lo:
                raise bad(f"{name}={v!r} must be an integer >= {lo}")
            setattr(self, name, int(v))

        def as_float(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, str):  # YAML 1.1 reads 1e-4 as a string
                try:
                    v = float(v)
                except ValueError:
                    raise bad(f"{name}={v!r} must be a number") from None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise bad(f"{name}={v!r} must be a number")
            setattr(self, name, float(v))

        for name in ("lbound", "noise_sigma", "noise_decay"):
            as_float(name)
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise bad(f"model={self.model!r} must be a model name such as lenet5 or resnet20")
        if self.model is None and self.checkpoint is None:
            raise bad("give a model (e.g. --model lenet5) or a trained --checkpoint")
        if self.model is not None and ":" not in self.model:
            from amc.models import MODELS

            if self.model.lower() not in MODELS:
                raise bad(f"unknown model {self.model!r}; valid: {', '.join(MODELS.names())} "
                          "(or torchvision:<name>, package.module:factory)")
        for name in ("model_kwargs", "env_kwargs", "agent_kwargs"):
            v = getattr(self, name)
            if v is None:
                setattr(self, name, {})
            elif not isinstance(v, Mapping):
                raise bad(f"{name} must be a mapping of options, got {type(v).__name__}")
            else:
                setattr(self, name, dict(v))
        if self.checkpoint is not None:
            self.checkpoint = str(self.checkpoint)
        from amc.data import DATASETS

        if str(self.dataset).lower() not in DATASETS:
            raise bad(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS.names())}")
        self.dataset = str(self.dataset).lower()
        if self.data_dir is not None:
            self.data_dir = str(self.data_dir)
        if self.val_size is not None and (isinstance(self.val_size, bool) or not isinstance(self.val_size, (int, float))
                                          or not self.val_size > 0):
            raise bad(f"val_size={self.val_size!r} must be a count (>= 1) or a fraction in (0, 1): the reward is "
                      "measured on these held-out images (leave it out for the dataset's default)")
        if self.mode not in MODES:
            raise bad(f"mode={self.mode!r}; valid: {', '.join(MODES)}")
        parse_target(self.target)  # AmcError naming the problem
        if not (isinstance(self.lbound, (int, float)) and 0.0 < float(self.lbound) <= 1.0):
            raise bad(f"lbound={self.lbound!r} must be in (0, 1] (AMC uses 0.2)")
        self.lbound = float(self.lbound)
        as_int("round_to", 1)
        if self.granularity not in GRANULARITIES:
            raise bad(f"granularity={self.granularity!r}; valid: {', '.join(GRANULARITIES)}")
        for name in ("w_bits", "a_bits"):
            v = getattr(self, name)
            try:
                lo, hi = (int(b) for b in v)
            except (TypeError, ValueError):
                raise bad(f"{name}={v!r} must be a pair [min, max] of bit widths, e.g. [2, 8]") from None
            if not 1 <= lo <= hi <= 32:
                raise bad(f"{name}={v!r} must satisfy 1 <= min <= max <= 32")
            setattr(self, name, (lo, hi))
        as_int("eval_batch_size", 1)
        try:
            AGENTS.get(self.agent)
        except ValueError as e:
            raise AmcError(str(e)) from None
        self.agent = str(self.agent).lower()
        as_int("episodes", 1)
        if self.warm_start is not None:
            if self.agent != "ddpg":
                raise bad(f"warm_start is a ddpg option (agent is {self.agent!r})")
            src = Path(str(self.warm_start))
            if not (src / "best_policy.json").is_file() and not (src.is_file() and src.suffix == ".json"):
                raise bad(f"warm_start={str(src)!r}: give a run dir holding best_policy.json or a policy .json file")
            self.warm_start = str(src)
        as_int("warmup", 0)
        as_int("seed", 0)
        as_int("data_seed", 0)
        as_int("checkpoint_every", 1)
        as_int("train_epochs", 0)
        if self.checkpoint is None and self.train_epochs < 1:
            raise bad("train_epochs must be >= 1 without a checkpoint (the model is trained briefly first)")
        if self.threads is not None:
            as_int("threads", 1)
        if not (isinstance(self.noise_sigma, (int, float)) and self.noise_sigma >= 0 and math.isfinite(self.noise_sigma)):
            raise bad(f"noise_sigma={self.noise_sigma!r} must be >= 0 (AMC: 0.5, in units of the [0, 1] action)")
        if not (isinstance(self.noise_decay, (int, float)) and 0.0 < self.noise_decay <= 1.0):
            raise bad(f"noise_decay={self.noise_decay!r} must be in (0, 1] (AMC: 0.95)")
        for name in ("reconstruct", "final_reward_to_all", "resume", "overwrite"):
            if not isinstance(getattr(self, name), bool) and not (name == "reconstruct" and self.reconstruct is None):
                raise bad(f"{name} must be true or false, got {getattr(self, name)!r}")
        as_int("calibration_size", 1)
        from amc.proxies import parse_proxy

        self.proxy = parse_proxy(self.proxy).name
        if not (isinstance(self.budget_band, (int, float)) and 0.0 <= self.budget_band < 1.0):
            raise bad(f"budget_band={self.budget_band!r} must be in [0, 1) (0.02: episodes end within 2% under the target)")
        if self.resume and self.overwrite:
            raise bad("resume and overwrite exclude each other: --resume continues run_dir, --overwrite discards it")
        try:
            resolve_device(self.device)
        except ValueError as e:
            raise bad(str(e)) from None
        if not str(self.run_dir).strip():
            raise bad("run_dir must be a directory path")
        self.run_dir = str(self.run_dir)
        self._check_registries()

    def _check_registries(self) -> None:
        """Names owned by the env's and the pruner's registries (imported here: they import torch)."""
        from amc.pruning import IMPORTANCES
        from envs import REWARDS

        if self.reward not in REWARDS:
            raise AmcError(f"search config: unknown reward {self.reward!r}; valid: {', '.join(REWARDS.names())}")
        if self.importance not in IMPORTANCES:
            raise AmcError(f"search config: unknown importance {self.importance!r}; "
                           f"valid: {', '.join(IMPORTANCES.names())}")

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["w_bits"], d["a_bits"] = list(self.w_bits), list(self.a_bits)
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "config") -> SearchConfig:
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise AmcError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(cls.field_names())}")
        return cls(**dict(d))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
        """Load a YAML preset; ``overrides`` (e.g. command-line options; None values ignored) win."""
        return cls.from_dict({**_read_yaml(path), **{k: v for k, v in (overrides or {}).items() if v is not None}},
                             source=str(path))

    def comparable(self) -> dict[str, Any]:
        """The part of the config that defines a run (what must match to resume it)."""
        return {k: v for k, v in self.to_dict().items() if k not in _SESSION_KEYS}


def _read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AmcError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise AmcError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AmcError(f"config file {str(path)!r} must hold a mapping of options, not {type(data).__name__}")
    return data


def quickstart_path() -> Path:
    """``configs/quickstart.yaml`` of the source tree (may be absent in a wheel install)."""
    return Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"


def load_search_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """A config from ``path`` (default: the quickstart preset) with ``overrides`` applied."""
    if path is None:
        qs = quickstart_path()
        base = _read_yaml(qs) if qs.is_file() else dict(QUICKSTART)
        if (overrides or {}).get("checkpoint") is not None and (overrides or {}).get("model") is None:
            base.pop("model", None)  # the checkpoint knows its model; the preset's lenet5 must not override it
        return SearchConfig.from_dict({**base, **{k: v for k, v in (overrides or {}).items() if v is not None}},
                                      source="quickstart config")
    return SearchConfig.from_yaml(path, overrides)


# --------------------------------------------------------------------------------------------------
# run


def _check_run_dir(cfg: SearchConfig) -> None:
    """Refuse a run dir that holds another search (before any work is done)."""
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise AmcError(f"run_dir {str(run_dir)!r} exists and is not a directory; choose another --run-dir")
    cfg_file = run_dir / "config.yaml"
    has_results = bool(read_episodes(run_dir / "episodes.csv")) or (run_dir / "checkpoint").is_dir()
    if cfg.overwrite:
        return
    if cfg_file.is_file():
        try:
            old = SearchConfig.from_dict(_read_yaml(cfg_file), source=str(cfg_file)).comparable()
        except AmcError as e:
            raise AmcError(f"run dir {str(run_dir)!r} holds an unreadable config.yaml ({e}); choose a new --run-dir "
                           "or pass --overwrite") from None
        new = cfg.comparable()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
            raise AmcError(f"run dir {str(run_dir)!r} already holds a different search ({shown}); choose a new "
                           "--run-dir, continue that search with its own config and --resume, or pass --overwrite")
    elif has_results and cfg.resume:
        raise AmcError(f"run dir {str(run_dir)!r} has results but no config.yaml; cannot check what it was; "
                       "choose a new --run-dir or pass --overwrite")
    elif cfg.resume:
        what = "does not exist" if not run_dir.exists() else "holds no search (no config.yaml, episodes or checkpoint)"
        raise AmcError(f"--resume: run dir {str(run_dir)!r} {what}, so there is nothing to continue; check the path, "
                       "or drop --resume to start a new search there")
    if has_results and not cfg.resume:
        make = " (or `make clean`, which removes the quickstart's run)" if run_dir == Path(QUICKSTART["run_dir"]) else ""
        raise AmcError(f"run dir {str(run_dir)!r} already holds this search's results; pass --resume to continue it, "
                       f"--overwrite to start it again{make}, or choose a new --run-dir")


def _load_checkpoint_model(cfg: SearchConfig, splits: Any, path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    from amc.training import load_checkpoint

    if not path.is_file():
        raise AmcError(f"checkpoint {str(path)!r} does not exist (train one with `amc train`, or drop --checkpoint "
                       "to train briefly)")
    model, ckpt = load_checkpoint(path, device="cpu")
    spec = ckpt.get("model_spec") or {}
    name = str(spec.get("name", "?"))
    if cfg.model is not None and cfg.model.lower() != name.lower():
        raise AmcError(f"checkpoint {str(path)!r} holds a {name!r} model, but model {cfg.model!r} was asked for "
                       "(--model or the config's model:); drop it or pass a matching checkpoint")
    if spec:
        got = (int(spec.get("num_classes", -1)), int(spec.get("in_channels", -1)),
               tuple(int(s) for s in spec.get("image_size", (0, 0))))
        need = (int(splits.num_classes), int(splits.in_channels), tuple(int(s) for s in splits.image_size))
        if got != need:
            raise AmcError(
                f"checkpoint {str(path)!r} was built for {got[0]} classes and {got[1]}x{got[2][0]}x{got[2][1]} inputs "
                f"(model {name}), but dataset {cfg.dataset!r} has {need[0]} classes and "
                f"{need[1]}x{need[2][0]}x{need[2][1]} images; pass the matching --dataset or checkpoint")
    data = ckpt.get("data") or {}
    if isinstance(data.get("dataset"), str) and data["dataset"].lower() != cfg.dataset:
        raise AmcError(f"checkpoint {str(path)!r} was trained on {data['dataset']!r}, not on {cfg.dataset!r}; "
                       "pass the matching --dataset or checkpoint")
    info = getattr(splits, "info", {}) or {}
    if data and (data.get("seed"), data.get("val_size")) != (info.get("seed"), info.get("val_size")):
        logger.warning("checkpoint %s was trained with another val holdout (seed %s, val_size %s; the search uses "
                       "seed %s, val_size %s): some val images may have been trained on", path, data.get("seed"),
                       data.get("val_size"), info.get("seed"), info.get("val_size"))
    return model, ckpt


def _get_model(cfg: SearchConfig, splits: Any, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model to compress: from ``cfg.checkpoint``, the run's earlier pretraining, or trained now."""
    from amc.models import ModelSpec, build_model
    from amc.training import TrainConfig, load_checkpoint, train

    if cfg.checkpoint is not None:
        model, ckpt = _load_checkpoint_model(cfg, splits, Path(cfg.checkpoint).expanduser())
        return model, {"source": "checkpoint", "path": cfg.checkpoint, "metrics": ckpt.get("metrics", {}),
                       "spec": ckpt.get("model_spec")}
    assert cfg.model is not None
    pre_dir = Path(cfg.run_dir) / PRETRAIN_DIR
    pre = pre_dir / "final.pt"
    spec = ModelSpec.for_data(cfg.model, splits, kwargs=cfg.model_kwargs)
    if pre.is_file():
        model, ckpt = load_checkpoint(pre, device="cpu")
        same = (ckpt.get("model_spec") == spec.to_dict() and (ckpt.get("config") or {}).get("epochs") == cfg.train_epochs
                and (ckpt.get("data") or {}).get("dataset") == cfg.dataset
                and (ckpt.get("config") or {}).get("seed") == cfg.data_seed)
        if same:
            logger.info("using the model pretrained earlier in this run: %s", pre)
            return model, {"source": "pretrained", "path": str(pre), "metrics": ckpt.get("metrics", {}),
                           "spec": spec.to_dict()}
    logger.info("no checkpoint given: training %s on %s for %d epoch(s) first (pass --checkpoint to skip)",
                spec.name, cfg.dataset, cfg.train_epochs)
    seed_everything(cfg.data_seed)
    model = build_model(spec)
    tcfg = TrainConfig(epochs=cfg.train_epochs, seed=cfg.data_seed, device=str(device), num_threads=cfg.threads)
    result = train(model, splits, tcfg, run_dir=pre_dir, model_spec=spec)  # logs one line per epoch
    logger.info("pretrained %s: val top-1 %.2f%%, test top-1 %.2f%% -> %s", spec.name, result.get("val_top1") or 0.0,
                result.get("test_top1") or 0.0, result.get("checkpoint"))
    return model, {"source": "trained", "path": str(result.get("checkpoint", pre)),
                   "metrics": {k: result.get(k) for k in ("val_top1", "test_top1")}, "spec": spec.to_dict()}


def _band(cfg: SearchConfig) -> float:
    """The budget band the env gets: none for a multi-objective agent, whose front must span the costs."""
    from agents import AGENTS

    return 0.0 if getattr(AGENTS.get(cfg.agent), "multi_objective", False) else float(cfg.budget_band)


def _env_config(cfg: SearchConfig, device: torch.device) -> Any:
    from envs import EnvConfig

    wanted = {
        "mode": cfg.mode, "target": cfg.target, "reward": cfg.reward, "lbound": cfg.lbound, "round_to": cfg.round_to,
        "granularity": cfg.granularity, "importance": cfg.importance, "reconstruct": cfg.reconstruct,
        "proxy": cfg.proxy, "calibration_size": cfg.calibration_size, "budget_band": _band(cfg),
        "w_bits": tuple(cfg.w_bits), "a_bits": tuple(cfg.a_bits), "device": str(device), "seed": cfg.seed,
        "eval_batch_size": cfg.eval_batch_size, "eval_precision": cfg.eval_precision,
    }
    names = {f.name for f in fields(EnvConfig)}
    unknown = sorted(set(cfg.env_kwargs) - names)
    if unknown:
        raise AmcError(f"unknown env option(s) {', '.join(unknown)} in env_kwargs; valid: {', '.join(sorted(names))}")
    dropped = sorted(set(wanted) - names)
    if dropped:
        logger.debug("EnvConfig has no field(s) %s; not passed", dropped)
    kwargs = {k: v for k, v in wanted.items() if k in names}
    kwargs.update(cfg.env_kwargs)
    return EnvConfig(**kwargs)


class _TqdmProgress:
    """A live progress line: episode, reward, best, accuracy, MACs ratio, sigma."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __call__(self, row: Mapping[str, Any]) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=int(row["episode"]) - 1, desc="search", unit="ep",
                            dynamic_ncols=True)
        post = {"R": row.get("reward"), "best": row.get("best_reward"), "acc": row.get("accuracy"),
                "macs": row.get("macs_ratio"), "sigma": row.get("noise_sigma")}
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in post.items() if isinstance(v, (int, float))}, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_search(
    cfg: SearchConfig,
    *,
    progress: bool | Callable[[dict[str, Any]], None] | None = None,
    env_factory: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a search and return its summary (also written to ``run_dir/summary.json``).

    :param progress: True: a tqdm progress line; a callable: called with each episode's row.
    :param env_factory: builds the env as ``env_factory(model, splits, env_config, model_spec=...)``
        (default ``envs.CompressionEnv``); for tests and custom environments.

    Ctrl-C / SIGTERM finish the current episode, checkpoint and return with
    ``summary["interrupted"] = True``; rerun with ``resume=True`` to continue.
    """
    if not isinstance(cfg, SearchConfig):
        raise TypeError(f"run_search needs a SearchConfig, got {type(cfg).__name__}")
    _check_run_dir(cfg)
    # one process per run dir (an OS lock, released on any exit); nothing is written before the checks pass
    with locked_run_dir(cfg.run_dir, command="amc search"):
        _check_run_dir(cfg)  # again: another process may have written it before this one took the lock
        return _run_search_locked(cfg, progress=progress, env_factory=env_factory)


def _run_search_locked(
    cfg: SearchConfig,
    *,
    progress: bool | Callable[[dict[str, Any]], None] | None,
    env_factory: Callable[..., Any] | None,
) -> dict[str, Any]:
    agent_cls = AGENTS.get(cfg.agent)
    if cfg.warmup >= cfg.episodes and cfg.agent == "ddpg":
        logger.warning("warmup (%d) >= episodes (%d): every episode is a random one", cfg.warmup, cfg.episodes)
    device = resolve_device(cfg.device)
    try:
        env_cfg = _env_config(cfg, device)  # checked before any data or model work
    except AmcError:
        raise
    except (TypeError, ValueError) as e:
        raise AmcError(f"search config: {e}") from None
    run_dir = Path(cfg.run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    listeners: list[Callable[[dict[str, Any]], None]] = []
    bar = _TqdmProgress(cfg.episodes) if progress is True else None
    if bar is not None:
        listeners.append(bar)
    elif callable(progress):
        listeners.append(progress)

    from amc.data import get_dataset

    splits = get_dataset(cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=cfg.data_seed)
    model, model_info = _get_model(cfg, splits, device)
    model.eval()
    if env_factory is None:
        from envs import CompressionEnv

        env_factory = CompressionEnv
    env = env_factory(model, splits, env_cfg, model_spec=model_info.get("spec"))
    base_env = env.unwrapped  # the CompressionEnv inside any wrappers (e.g. benchmarks.harness.TimedEnv)
    # the env has checked the budget against the model: only now is config.yaml written
    provenance = {"checkpoint": checkpoint_record(model_info["path"]),
                  "data": data_record(splits, data_dir=cfg.data_dir, val_size=cfg.val_size)}
    recorder = SearchRecorder(run_dir, agent=cfg.agent, episodes=cfg.episodes, seed=cfg.seed, target=cfg.target,
                              base_accuracy=float(base_env.base_accuracy), config=cfg.to_dict(), provenance=provenance,
                              resume=cfg.resume, listeners=listeners)
    if cfg.overwrite:
        import shutil

        for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    model_name = (model_info.get("spec") or {}).get("name", cfg.model)
    logger.info("search: %s on %s/%s, %s, %d decisions per episode, base val top-1 %.2f%%, %d episodes -> %s",
                cfg.agent, model_name, cfg.dataset, cfg.target, base_env.n_decisions, base_env.base_accuracy, cfg.episodes,
                run_dir)
    agent = agent_cls(env, cfg, recorder)
    try:
        with stop_on_signals(agent):
            agent.run(cfg.episodes)
    except BaseException:
        recorder.close(interrupted=True)  # what was recorded stays readable; the checkpoint is the resume point
        raise
    finally:
        if bar is not None:
            bar.close()
    extra = {"model": cfg.model, "dataset": cfg.dataset, "mode": cfg.mode, "reward": cfg.reward,
             "model_source": model_info, "decisions_per_episode": int(base_env.n_decisions), **agent.summary_extra()}
    summary = recorder.close(interrupted=agent.interrupted, extra=extra)
    if agent.interrupted:
        logger.warning("search stopped after episode %d of %d; continue it with --resume (run dir %s)",
                       recorder.episode, cfg.episodes, run_dir)
    return summary
