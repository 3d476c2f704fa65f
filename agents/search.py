"""``SearchConfig`` (everything ``amc search`` takes) and ``run_search`` (data -> model -> env -> agent).

A search run lives in its own directory (``run_dir``)::

    config.yaml, episodes.csv, best_policy.json/.png, summary.json, search/ (TensorBoard; agents._recorder)
    checkpoint/       the agent's resumable state (every ``checkpoint_every`` episodes and on Ctrl-C)
    pretrain/         the brief pretraining (``final.pt``), when no ``checkpoint`` was given
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from agents._base import AGENTS, stop_on_signals
from agents._recorder import SearchRecorder, read_episodes
from amc.config import config_fields, flat_name, load_yaml, nest_flat_keys, set_path
from amc.config.flat import FlatConfig, flat_config
from amc.config.search import QUICKSTART, SearchOptions, quickstart, quickstart_path
from amc.errors import AmcError
from amc.policy import checkpoint_record, data_record
from amc.rundir import locked_run_dir
from amc.utils import resolve_device, seed_everything

__all__ = ["SearchConfig", "run_search", "QUICKSTART", "load_search_config", "quickstart", "quickstart_path"]

logger = logging.getLogger(__name__)

#: keys that may differ between the sessions of one run (everything else must match to --resume)
_SESSION_KEYS = frozenset({"episodes", "resume", "overwrite", "device", "threads", "run_dir", "checkpoint_every"})
PRETRAIN_DIR = "pretrain"


#: flat name -> dotted path in SearchOptions ("episodes" -> "agent.episodes")
FLAT_PATHS: dict[str, str] = {flat_name(f.path): f.path for f in config_fields(SearchOptions)}


class _SearchConfigBase(FlatConfig):
    """Methods of :class:`SearchConfig` (whose fields are made from :class:`SearchOptions`)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "search config") -> Any:
        """From a flat (``episodes: 10``) or nested (``agent: {episodes: 10}``) mapping."""
        return cls.from_options(cls.validate(d, source=source))

    def comparable(self) -> dict[str, Any]:
        """The part of the config that defines a run (what must match to resume it)."""
        return {k: v for k, v in self.to_dict().items() if k not in _SESSION_KEYS}


#: A compression search, flat: one attribute per leaf of :class:`amc.config.search.SearchOptions`
#: (``cfg.episodes`` is ``agent.episodes``, ``cfg.model`` is ``model.name``, ``cfg.agent`` is
#: ``agent.name``), with its defaults, descriptions and checks; an invalid value raises ``AmcError``.
SearchConfig = flat_config("SearchConfig", SearchOptions, module=__name__, base=_SearchConfigBase,
                           what="search config", doc="A compression search: the flat fields of SearchOptions.")


def load_search_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
    """A config from ``path`` (default: the quickstart preset) with ``overrides`` (flat names) applied."""
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    data = nest_flat_keys(SearchOptions, quickstart() if path is None else load_yaml(path))
    if path is None and over.get("checkpoint") is not None and over.get("model") is None:
        data.get("model", {}).pop("name", None)  # the checkpoint knows its model; the preset's must not override it
    for key, value in over.items():
        set_path(data, FLAT_PATHS.get(key, key), value)
    return SearchConfig.from_dict(data, source="quickstart config" if path is None else str(path))


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
            old = SearchConfig.from_dict(load_yaml(cfg_file), source=str(cfg_file)).comparable()
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


def _env_config(cfg: SearchConfig, device: torch.device) -> Any:
    from envs import EnvConfig

    # no budget band for a multi-objective agent, whose front must span the costs
    band = 0.0 if getattr(AGENTS.get(cfg.agent), "multi_objective", False) else float(cfg.budget_band)
    wanted = {
        "mode": cfg.mode, "target": cfg.target, "reward": cfg.reward, "lbound": cfg.lbound, "round_to": cfg.round_to,
        "granularity": cfg.granularity, "importance": cfg.importance, "reconstruct": cfg.reconstruct,
        "proxy": cfg.proxy, "calibration_size": cfg.calibration_size, "budget_band": band,
        "w_bits": tuple(cfg.w_bits), "a_bits": tuple(cfg.a_bits), "device": str(device), "seed": cfg.seed,
        "eval_batch_size": cfg.eval_batch_size, "eval_precision": cfg.eval_precision,
    }
    return EnvConfig.from_dict({**wanted, **cfg.env_kwargs})  # AmcError for an unknown key or a bad value


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
        return _run_search_locked(cfg, progress, env_factory)


def _run_search_locked(cfg: SearchConfig, progress: bool | Callable[[dict[str, Any]], None] | None,
                       env_factory: Callable[..., Any] | None) -> dict[str, Any]:
    agent_cls = AGENTS.get(cfg.agent)
    if cfg.warmup >= cfg.episodes and cfg.agent == "ddpg":
        logger.warning("warmup (%d) >= episodes (%d): every episode is a random one", cfg.warmup, cfg.episodes)
    device = resolve_device(cfg.device)
    env_cfg = _env_config(cfg, device)  # checked before any data or model work
    run_dir = Path(cfg.run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    bar = _TqdmProgress(cfg.episodes) if progress is True else None
    listener = bar or (progress if callable(progress) else None)

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
                              resume=cfg.resume, listeners=[listener] if listener else [])
    if cfg.overwrite:
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
