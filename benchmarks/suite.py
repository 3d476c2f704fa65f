"""The reproducible benchmark suite behind ``amc bench``: AMC's CIFAR-10 experiment at a CPU's scale.

One call of :func:`run_benchmark` measures, for one trained checkpoint and one budget (AMC: 50% MACs):

(a) **compression**: the ``uniform`` baseline, AMC's ``ddpg`` and Optuna's ``tpe`` search the same env
    (same model, val images, reward and budget), DDPG and TPE with the same number of evaluations
    (env episodes) and the same number of random warm-up ones. ``uniform`` is one policy, the largest
    uniform keep ratio that meets the budget; its bisection probes the env a few times, but the budget
    alone picks the policy (accuracy never does). For every method's best policy: the val top-1 the
    search measured (the reward's images, no fine-tuning), the test top-1 of the same model rebuilt with
    :func:`amc.compress.apply_policy` (checked against the search's val top-1), the test top-1 after
    the same short fine-tuning with knowledge distillation from the uncompressed model
    (:func:`amc.finetune.finetune`), and the median CPU latency at batch 1 and 64 next to the MACs ratio.
(b) **search speed**: seconds per evaluation and its split into prune / reconstruct / quantize /
    evaluate / the rest of the env / the agent (action selection, learning, recording), from
    :class:`TimedEnv`, which every search of (a) runs in.
(c) **extras**: results of ``scripts/bench_int8.py`` and ``scripts/bench_transfer.py`` (JSON) when
    they exist, copied into the report.

Output directory (every stage is skipped when its result exists, so an interrupted run continues)::

    bench_config.json      the resolved :class:`BenchConfig`, and the checkpoint's sha256
    checkpoint.pt          a snapshot of the checkpoint (a training run may still be rewriting it)
    base.json              the uncompressed model: val/test top-1, MACs, parameters
    search-<agent>/        the search's run dir (amc search's files) + timing.json (TimedEnv records)
    finetune-<agent>/      the rebuilt model's accuracy + the KD fine-tuning run (last.pt, final.pt,
                           metrics.json, TensorBoard) + result.json
    latency.json           all models timed together, in interleaved rounds
    results.json           everything above in one document (``format: amc-bench``)
    report.md              :func:`render_report` of results.json

Timings are medians, but a shared machine still moves them: the load average is recorded at every
stage (``os.getloadavg()``) so that readers can judge.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from amc.config.bench import PRESETS, BenchOptions
from amc.config.flat import FlatConfig, flat_config
from amc.errors import AmcError
from amc.utils import atomic_write_json, atomic_write_text, file_sha256
from benchmarks.harness import (
    TIMING_KEYS,
    TimedEnv,
    changed_keys,
    episode_split,
    evaluations_to_within,
    fmt,
    loadavg,
    md_table,
    mean_std,
    pm,
    read_result,
    safe_name,
    stage,
)
from envs import CompressionEnv

__all__ = ["BenchConfig", "PRESETS", "PUBLISHED", "run_benchmark", "render_report", "load_extras"]

logger = logging.getLogger(__name__)

#: published results quoted in ``/work/shared/design/REFERENCE.md`` (top-1 %, CIFAR-10, 50% MACs)
PUBLISHED: list[dict[str, Any]] = [
    {"source": "AMC (He et al., ECCV 2018), quoted by Distiller's README", "model": "ResNet-56",
     "base": 92.8, "pruned": None, "finetuned": 91.9},
    {"source": "AMC (He et al., ECCV 2018), quoted by Distiller's README", "model": "Plain-20",
     "base": 90.5, "pruned": None, "finetuned": 90.2},
    {"source": "another AMC implementation (REFERENCE.md)", "model": "Plain-20",
     "base": 91.22, "pruned": 80.01, "finetuned": 89.86},
]

#: config fields that may change between the sessions of one benchmark directory
_SESSION_KEYS = frozenset({"agents", "threads", "latency_threads", "latency_batches", "latency_min_time_s",
                           "latency_rounds", "extras"})


# --------------------------------------------------------------------------------------------------
# config


class _BenchConfigBase(FlatConfig):
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Any:
        """The preset's settings (:data:`PRESETS`) with ``overrides`` applied (None is a value here:
        e.g. ``test_size=None`` evaluates the whole test split)."""
        if name not in PRESETS:
            raise AmcError(f"unknown benchmark preset {name!r}; valid: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    def comparable(self) -> dict[str, Any]:
        """What must match for the results of an earlier session to be reused."""
        return {k: v for k, v in self.to_dict().items() if k not in _SESSION_KEYS}


#: One benchmark, flat: one attribute per leaf of :class:`amc.config.bench.BenchOptions` (the model and
#: data, the searches and their env as in ``agents.search.SearchConfig``, KD fine-tuning as in
#: ``amc.finetune.FinetuneConfig`` with ``ft_`` names, latency, threads and device), which owns their
#: defaults, descriptions and checks; a bad value raises ``AmcError``. ``to_dict()`` is what
#: ``bench_config.json`` holds.
BenchConfig = flat_config("BenchConfig", BenchOptions, module=__name__, base=_BenchConfigBase, what="bench config",
                          doc="One benchmark: the leaves of amc.config.bench.BenchOptions.")


# --------------------------------------------------------------------------------------------------
# helpers


def _subset_splits(splits: Any, **sizes: int) -> Any:
    """A view of ``splits`` whose val/test splits are their first ``val``/``test`` images (the
    splits are stored shuffled, so a prefix is a uniform sample); train is shared."""
    cut = {k: getattr(splits, k).subset(torch.arange(n)) for k, n in sizes.items()
           if n < len(getattr(splits, k))}
    return dataclasses.replace(splits, **cut, _cache={})


# --------------------------------------------------------------------------------------------------
# the run


class _Bench:
    """State shared by the stages of one :func:`run_benchmark` call."""

    def __init__(self, cfg: BenchConfig, out: Path, *, progress: bool, overwrite: bool) -> None:
        """Checks ``out`` against ``cfg``, snapshots the checkpoint and loads the model and data."""
        from amc.data import get_dataset
        from amc.pruning import Pruner
        from amc.training import load_checkpoint
        from amc.utils import resolve_device

        self.cfg, self.out, self.progress = cfg, out, progress
        self.stages: dict[str, Any] = {}
        self.executed: dict[str, bool] = {}  # stage -> computed now (False: reused from an earlier session)
        src = Path(cfg.checkpoint).expanduser()
        if not src.is_file():
            raise AmcError(f"checkpoint {str(src)!r} does not exist (train one with `amc train`)")
        sha = file_sha256(src)
        cfg_path = out / "bench_config.json"
        if overwrite:
            self._clear()
        old = read_result(cfg_path)
        if old is not None:
            was, now = old.get("config", {}), cfg.comparable()
            shown = [f"{k}: {was.get(k)!r} -> {now.get(k)!r}"
                     for k in changed_keys(was, now, ignore=_SESSION_KEYS)][:5]
            if old.get("checkpoint_sha256") != sha:
                shown.append("the checkpoint's contents changed")
            if shown:
                raise AmcError(f"{str(out)!r} holds a benchmark with other settings ({', '.join(shown)}); "
                               "pass --overwrite to start again there, or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = out / "checkpoint.pt"  # a snapshot: training may still rewrite the original
        if not self.checkpoint_path.is_file() or file_sha256(self.checkpoint_path) != sha:
            shutil.copyfile(src, self.checkpoint_path)
        atomic_write_json(cfg_path, {"config": cfg.to_dict(), "checkpoint_sha256": sha})

        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.base, ckpt = load_checkpoint(self.checkpoint_path, device=self.device)
        self.base.eval()
        self.spec = ckpt.get("model_spec")
        self.model_info = {"name": (self.spec or {}).get("name"), "spec": self.spec or {},
                           "checkpoint": cfg.checkpoint, "snapshot": str(self.checkpoint_path),
                           "sha256": sha, "checkpoint_metrics": ckpt.get("metrics"),
                           "trained_epochs": (ckpt.get("train_state") or {}).get("epoch"),
                           "planned_epochs": (ckpt.get("config") or {}).get("epochs")}
        data = ckpt.get("data") or {}
        self.dataset = (cfg.dataset or data.get("dataset") or "").lower()
        if not self.dataset:
            raise AmcError("the checkpoint does not record its dataset: pass --dataset")
        same = str(data.get("dataset", "")).lower() == self.dataset
        self.data_dir = cfg.data_dir or (data.get("data_dir") if same and self.dataset != "digits" else None)
        self.val_size = cfg.val_size if cfg.val_size is not None else (data.get("val_size") if same else None)
        self.data_seed = cfg.data_seed if cfg.data_seed is not None else int((data.get("seed") if same else 0) or 0)
        self.splits = get_dataset(self.dataset, data_dir=self.data_dir, val_size=self.val_size, seed=self.data_seed)
        source = Path(str(self.splits.info.get("data_dir") or ""))
        self.image_files = (source / "train").is_dir() and (source / "test").is_dir()  # an ImageFolder tree
        if self.val_size is None:
            self.val_size = len(self.splits.val)
        if len(self.splits.val) == 0:
            raise AmcError("the val split is empty: the reward needs val images (pass --val-size)")
        self.n_val = min(cfg.reward_val or len(self.splits.val), len(self.splits.val))
        self.n_test = min(cfg.test_size or len(self.splits.test), len(self.splits.test))
        self.val_data = self.splits.tensors("val", device=self.device, limit=self.n_val)
        self.test_data = self.splits.tensors("test", device=self.device, limit=self.n_test)
        self.example = self.val_data[0][:1]
        self.pruner = Pruner(self.base, self.example, seed=cfg.seed)

    def _clear(self) -> None:
        for p in [*self.out.glob("search-*"), *self.out.glob("finetune-*")]:
            if p.is_dir():
                shutil.rmtree(p)
        for name in ("bench_config.json", "checkpoint.pt", "base.json", "latency.json", "results.json",
                     "report.md"):
            (self.out / name).unlink(missing_ok=True)

    def evaluate(self, model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
        from amc.training import evaluate

        return float(evaluate(model.to(self.device), data, batch_size=1000))

    # ------------------------------------------------------------- (a) base model
    def base_stage(self) -> dict[str, Any]:
        from amc.graph import count_macs_params

        path = self.out / "base.json"
        doc = read_result(path)
        self.executed["base"] = doc is None
        if doc is None:
            with stage("base", self.stages):
                macs, params = count_macs_params(self.base, self.example)
                doc = {"val_top1": self.evaluate(self.base, self.val_data),
                       "test_top1": self.evaluate(self.base, self.test_data),
                       "val_images": self.n_val, "test_images": self.n_test, "macs": int(macs), "params": int(params)}
            atomic_write_json(path, doc)
        return doc

    # ------------------------------------------------------------- (a) searches
    def search_stage(self, agent: str) -> dict[str, Any]:
        from agents import AGENTS, OptunaAgent, SearchConfig, UniformAgent, run_search
        from agents._recorder import read_episodes

        cfg, cls = self.cfg, AGENTS.get(agent)
        run_dir = self.out / f"search-{safe_name(agent)}"
        summary = read_result(run_dir / "summary.json")
        timing = read_result(run_dir / "timing.json")
        done = summary is not None and not summary.get("interrupted") and timing is not None
        self.executed[f"search-{agent}"] = not done
        if not done:
            has_ckpt = (run_dir / "checkpoint").is_dir()
            scfg = SearchConfig(
                checkpoint=str(self.checkpoint_path), dataset=self.dataset, data_dir=self.data_dir,
                val_size=self.val_size, data_seed=self.data_seed, target=cfg.target, lbound=cfg.lbound,
                round_to=cfg.round_to, importance=cfg.importance, reconstruct=cfg.reconstruct or None,
                proxy=cfg.proxy, calibration_size=cfg.calibration_size, budget_band=cfg.budget_band,
                eval_precision=cfg.eval_precision, agent=agent, warmup=cfg.warmup, seed=cfg.seed,
                episodes=cfg.uniform_max_evaluations if issubclass(cls, UniformAgent) else cfg.episodes,
                # the Optuna samplers start with as many random trials as DDPG's warm-up
                agent_kwargs={"n_startup_trials": cfg.warmup} if issubclass(cls, OptunaAgent) else {},
                env_kwargs={"eval_limit": self.n_val} if self.n_val < len(self.splits.val) else {},
                run_dir=str(run_dir), device=str(self.device), threads=cfg.threads,
                resume=has_ckpt, overwrite=not has_ckpt and run_dir.exists())
            records: list[dict[str, float]] = []
            with stage(f"search-{agent}", self.stages):
                t0 = time.perf_counter()
                summary = run_search(scfg, progress=self.progress or None,
                                     env_factory=lambda *a, **k: TimedEnv(CompressionEnv(*a, **k), records))
                wall = time.perf_counter() - t0
            if summary.get("interrupted"):
                raise KeyboardInterrupt(f"search {agent} interrupted")
            rows = read_episodes(run_dir / "episodes.csv")
            phases = [str(r.get("phase") or "") for r in rows] if len(rows) == len(records) else None
            st = self.stages[f"search-{agent}"]
            timing = {"records": records, "phases": phases, "wall_s": wall, "resumed": scfg.resume,
                      "setup_s": max(0.0, wall - sum(r["episode_s"] for r in records)),
                      "loadavg": [st["loadavg_start"], st["loadavg_end"]]}
            atomic_write_json(run_dir / "timing.json", timing)
        return {"summary": summary, "timing": timing, "run_dir": str(run_dir)}

    # ------------------------------------------------------------- (a) rebuild, test, fine-tune
    def compressed(self, search: Mapping[str, Any]) -> tuple[nn.Module, Any]:
        from amc.compress import apply_policy
        from amc.policy import Policy

        policy = Policy.load(Path(search["run_dir"]) / "best_policy.json")
        model = apply_policy(self.base, policy, splits=self.splits, device=self.device, pruner=self.pruner)
        return model.eval(), policy

    def finetune_stage(self, agent: str, search: Mapping[str, Any]) -> dict[str, Any]:
        from amc.finetune import FinetuneConfig, finetune
        from amc.graph import count_macs_params

        cfg = self.cfg
        run_dir = self.out / f"finetune-{safe_name(agent)}"
        path = run_dir / "result.json"
        doc = read_result(path)
        if self.executed.get(f"search-{agent}"):  # a new search: an earlier fine-tuning is stale
            shutil.rmtree(run_dir, ignore_errors=True)
            doc = None
        self.executed[f"finetune-{agent}"] = doc is None
        if doc is not None:
            return doc
        with stage(f"finetune-{agent}", self.stages):
            model, policy = self.compressed(search)
            macs, params = count_macs_params(model, self.example)
            base_macs, base_params = count_macs_params(self.base, self.example)
            val = self.evaluate(model, self.val_data)
            searched = search["summary"].get("best_accuracy")
            if searched is not None and cfg.eval_precision == "fp32" and abs(val - float(searched)) > 0.02:
                logger.warning("%s: the rebuilt model's val top-1 %.2f differs from the search's %.2f", agent, val,
                               float(searched))
            doc = {
                "agent": agent, "policy": str(Path(search["run_dir"]) / "best_policy.json"),
                "keep_ratios": [round(r, 4) for r in policy.keep_ratios],
                "macs": int(macs), "params": int(params), "macs_ratio": macs / base_macs,
                "params_ratio": params / base_params, "val_top1": val,
                "test_top1": self.evaluate(model, self.test_data), "finetune": None,
            }
            if cfg.ft_epochs > 0:
                fcfg = FinetuneConfig(epochs=cfg.ft_epochs, lr=cfg.ft_lr, batch_size=cfg.ft_batch_size, kd=cfg.kd,
                                      kd_temperature=cfg.kd_temperature, kd_alpha=cfg.kd_alpha,
                                      steps_per_epoch=cfg.ft_steps_per_epoch, seed=cfg.seed, device=str(self.device),
                                      num_threads=cfg.threads, precision=cfg.ft_precision,
                                      channels_last=cfg.ft_channels_last)
                view = _subset_splits(self.splits, val=self.n_val, test=self.n_test)
                runs = []
                for i, seed in enumerate(cfg.ft_seeds):  # the first seed's run dir is the one-seed layout
                    sdir = run_dir if i == 0 else run_dir / f"seed{seed}"
                    t0 = time.perf_counter()
                    student = model if i == len(cfg.ft_seeds) - 1 else copy.deepcopy(model)
                    res = finetune(student, view, dataclasses.replace(fcfg, seed=seed), run_dir=sdir,
                                   teacher=self.base if cfg.kd else None, resume=(sdir / "last.pt").is_file(),
                                   progress=self.progress, model_spec=self.spec,
                                   meta={"policy": policy.to_dict(), "bench_agent": agent})
                    runs.append({"seed": seed, "val_top1": res.get("val_top1"), "test_top1": res.get("test_top1"),
                                 "train_time_s": res.get("train_time_s"), "wall_s": time.perf_counter() - t0})
                epoch_steps = math.ceil(len(self.splits.train) / cfg.ft_batch_size)
                steps = min(cfg.ft_steps_per_epoch or epoch_steps, epoch_steps) * cfg.ft_epochs
                doc["finetune"] = {
                    **mean_std(runs, ("val_top1", "test_top1")), "steps": steps,
                    "epochs_equivalent": steps * cfg.ft_batch_size / len(self.splits.train),
                    "train_time_s": sum(r["train_time_s"] or 0.0 for r in runs),
                    "wall_s": sum(r["wall_s"] for r in runs), "seeds": list(cfg.ft_seeds), "runs": runs,
                    "config": fcfg.to_dict(),
                }
                self.base.eval()
        atomic_write_json(path, doc)
        return doc

    # ------------------------------------------------------------- (a) latency
    def latency_stage(self, searches: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from amc.latency import measure_latency

        cfg = self.cfg
        path = self.out / "latency.json"
        want = {"threads": cfg.latency_threads, "batches": list(cfg.latency_batches), "models": ["uncompressed",
                                                                                                 *searches]}
        if not cfg.latency_batches:  # not measured in this session (a loaded machine): nothing to report
            self.executed["latency"] = False
            return {**want, "results": {}}
        doc = read_result(path)
        if doc is not None and all(doc.get(k) == v for k, v in want.items()) and not any(self.executed.values()):
            self.executed["latency"] = False
            return doc
        self.executed["latency"] = True
        with stage("latency", self.stages):
            models = {"uncompressed": self.base, **{a: self.compressed(s)[0] for a, s in searches.items()}}
            cpu = {name: m.to("cpu").eval() for name, m in models.items()}
            rounds: dict[str, dict[int, list[Any]]] = {n: {b: [] for b in cfg.latency_batches} for n in cpu}
            for _ in range(cfg.latency_rounds):  # interleaved: load drift hits every model alike
                for b in cfg.latency_batches:
                    for name, m in cpu.items():
                        r = measure_latency(m, tuple(self.example.shape[1:]), batch_size=b, repeats=5,
                                            warmup=3 if b > 1 else 10, threads=cfg.latency_threads,
                                            min_time_s=cfg.latency_min_time_s, device="cpu")
                        rounds[name][b].append(r.to_dict())
            results = {
                name: {str(b): {"median_ms": statistics.median(r["median_ms"] for r in rs),
                                "rounds_ms": [round(r["median_ms"], 4) for r in rs],
                                "runs": sum(r["repeats"] for r in rs)}
                       for b, rs in by_batch.items()}
                for name, by_batch in rounds.items()
            }
            if self.device.type != "cpu":
                self.base.to(self.device)
            doc = {**want, "min_time_s": cfg.latency_min_time_s, "rounds": cfg.latency_rounds, "results": results}
        doc["loadavg"] = [self.stages["latency"]["loadavg_start"], self.stages["latency"]["loadavg_end"]]
        atomic_write_json(path, doc)
        return doc


def load_extras(out_dir: str | os.PathLike, paths: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The int8 and transfer benchmarks' JSON outputs, where present.

    ``paths`` maps a name (``int8``, ``transfer``) to a file; without it these are tried in order:
    ``OUT/<name>.json``, ``bench_out/<name>.json``, then the scripts' defaults ``bench_<name>.json`` (int8)
    and ``bench_out/<name>/bench_<name>.json`` (transfer).
    Each entry is ``{"path": ..., "data": <the JSON>}``; unreadable files are skipped with a warning.
    """
    out = Path(out_dir)
    candidates = {name: [out / f"{name}.json", Path("bench_out") / f"{name}.json", Path(f"bench_{name}.json"),
                         Path("bench_out") / name / f"bench_{name}.json"]
                  for name in ("int8", "transfer")} | {name: [Path(p)] for name, p in (paths or {}).items()}
    found: dict[str, Any] = {}
    for name, files in candidates.items():
        for f in files:
            if (data := read_result(f)) is not None:
                found[name] = {"path": str(f), "data": data}
                break
    return found


def collect_finetunes(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The fine-tuning results a benchmark folder holds so far, finished seeds only: per agent its
    search's best policy (MACs, params, search score) and one ``{seed, val_top1, test_top1,
    epochs}`` per finished fine-tune. For a benchmark whose fine-tunes span sessions
    (``docs/results.md`` reads the JSON this gives)."""
    out = Path(out_dir)
    cfg_path = out / "bench_config.json"
    if not cfg_path.is_file():
        raise AmcError(f"{out} holds no bench_config.json: not an amc bench folder")
    cfg = json.loads(cfg_path.read_text())["config"]
    methods = []
    # every finished search (sessions may have run the agents in separate processes)
    for summary in sorted(out.glob("search-*/summary.json"), key=lambda p: (p.parent.name != "search-uniform", p)):
        s = json.loads(summary.read_text())
        agent = summary.parent.name.removeprefix("search-")
        runs = []
        for i, seed in enumerate(cfg["ft_seeds"]):  # the first seed's run dir is the one-seed layout
            m = read_result(out / f"finetune-{agent}" / (f"seed{seed}" if i else "") / "metrics.json") or {}
            if m.get("test_top1") is not None:
                runs.append({"seed": seed, "val_top1": m.get("val_top1"), "test_top1": m["test_top1"],
                             "epochs": m.get("epochs")})
        methods.append({"agent": agent, "macs_ratio": s["achieved"]["macs_ratio"],
                        "params_ratio": s["achieved"]["params_ratio"], "search_val_top1": s["best_accuracy"],
                        "evaluations": s.get("evaluations", s.get("episodes")), "runs": runs})
    keys = ("checkpoint", "dataset", "target", "proxy", "budget_band", "ft_epochs", "ft_seeds", "ft_lr", "kd")
    return {"format": "amc-bench-finetunes", "config": {k: cfg.get(k) for k in keys}, "methods": methods}


def run_benchmark(cfg: BenchConfig, *, out_dir: str | os.PathLike, overwrite: bool = False, progress: bool = False,
                  command: str | None = None) -> dict[str, Any]:
    """Run (or continue) the benchmark into ``out_dir``; returns the results (``results.json``) and
    writes ``report.md``. Stages whose results exist in ``out_dir`` are reused (a mismatching config
    is an error unless ``overwrite``, which discards the earlier results).

    :param progress: progress bars for the searches and the fine-tuning (the CLI passes True).
    :param command: the command line, recorded in the results and the report.
    """
    t0 = time.perf_counter()
    load_start = loadavg()
    out = Path(out_dir)
    bench = _Bench(cfg, out, progress=progress, overwrite=overwrite)
    base = bench.base_stage()
    searches = {agent: bench.search_stage(agent) for agent in cfg.agents}
    finetuned = {agent: bench.finetune_stage(agent, search) for agent, search in searches.items()}
    latency = bench.latency_stage(searches)
    lat = latency["results"]
    methods, speed = [], {}
    for agent, search in searches.items():
        s, tm = search["summary"], search["timing"]
        records = tm.get("records") or []
        ms = {b: r["median_ms"] for b, r in lat.get(agent, {}).items()}
        n_eval = int(s.get("evaluations") or len(records) or s.get("episodes") or 0)
        methods.append({**finetuned[agent], "evaluations": n_eval, "episodes": s.get("episodes"),
                        "single_policy": bool(s.get("profile")), "search_val_top1": s.get("best_accuracy"),
                        "search_wall_s": s.get("wall_time_s"), "achieved": s.get("achieved", {}),
                        "latency_ms": ms,
                        "speedup": {b: lat["uncompressed"][b]["median_ms"] / v for b, v in ms.items() if v}})
        speed[agent] = {"evaluations": len(records), "wall_s": tm.get("wall_s"), "setup_s": tm.get("setup_s"),
                        "resumed": tm.get("resumed"), "loadavg": tm.get("loadavg"),
                        "split": episode_split(records, tm.get("phases")),
                        "evaluations_to_within_0.5": evaluations_to_within(Path(search["run_dir"]) / "episodes.csv")}
    results: dict[str, Any] = {
        "format": "amc-bench",
        "version": 1,
        "command": command,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "config": cfg.to_dict(),
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": cfg.threads,
            "latency_threads": cfg.latency_threads, "device": str(bench.device),
            "loadavg_start": load_start, "loadavg_end": loadavg(),
        },
        "model": bench.model_info,
        "data": {"dataset": bench.dataset, "data_dir": bench.data_dir, "val_size": bench.val_size,
                 "data_seed": bench.data_seed, "reward_val_images": bench.n_val, "test_images": bench.n_test,
                 "test_split_images": len(bench.splits.test), "train_images": len(bench.splits.train),
                 "source": bench.splits.info.get("data_dir"), "image_files": bench.image_files},
        "out_dir": str(out),
        "base": base,
        "methods": methods,
        "latency": latency,
        "search_speed": speed,
        "extras": load_extras(out, cfg.extras),
        "published": PUBLISHED,
        "stages": bench.stages,
        "computed_now": bench.executed,
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render_report(results))
    logger.info("bench: done in %.0f s -> %s", results["wall_time_s"], out / "report.md")
    return results


# --------------------------------------------------------------------------------------------------
# the report


def _count(n: float) -> str:
    """12345678 -> '12.3 M'."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:g}"


def _delta(a: Any, b: Any) -> str:
    return "-" if a is None or b is None else f"{a - b:+.2f}"


def compression_table(results: Mapping[str, Any]) -> list[str]:
    """Section (a)'s markdown table (lines)."""
    base = results["base"]
    batches = [str(b) for b in results["latency"].get("batches", [])]
    lat_base = results["latency"]["results"].get("uncompressed", {})
    head = ["method", "evaluations", "MACs", "params", "val top-1", "test top-1", "test top-1 KD-FT",
            "Δ test (FT)"]
    row = ["uncompressed", "-", "1.000", "1.000", fmt(base["val_top1"]), fmt(base["test_top1"]), "-", "-"]
    for b in batches:
        head += [f"ms b{b}", f"speed-up b{b}"]
        row += [fmt(lat_base.get(b, {}).get("median_ms")), "1.00x"]
    rows = [[*row, "1.00x"]]
    for m in results["methods"]:
        ft = m.get("finetune") or {}
        ev = f"1 policy ({m['evaluations']} probes)" if m.get("single_policy") else str(m["evaluations"])
        ft_test = pm({"mean": ft.get("test_top1"), "std": ft.get("test_top1_std"),
                      "n": len(ft.get("seeds") or [])})
        row = [m["agent"], ev, fmt(m["macs_ratio"], ".3f"), fmt(m["params_ratio"], ".3f"), fmt(m["val_top1"]),
               fmt(m["test_top1"]), ft_test, _delta(ft.get("test_top1"), base["test_top1"])]
        for b in batches:
            sp = m.get("speedup", {}).get(b)
            row += [fmt(m.get("latency_ms", {}).get(b)), "-" if sp is None else f"{sp:.2f}x"]
        rows.append([*row, f"{1.0 / m['macs_ratio']:.2f}x" if m.get("macs_ratio") else "-"])
    return md_table([*head, "1 / MACs"], rows)


def speed_table(results: Mapping[str, Any]) -> list[str]:
    """Section (b)'s markdown table (lines)."""
    keys = ("episode_s", *TIMING_KEYS, "env_other", "agent")
    head = ["agent (phase)", "episodes", "s / episode", "prune", "reconstruct", "quantize", "proxy", "evaluate",
            "env other", "agent + recording", "evaluate share", "evaluations to within 0.5 of its best"]
    rows = []
    for agent, sp in results["search_speed"].items():
        for phase, s in sp["split"].items():
            label = agent if phase == "all" else f"{agent} ({phase})"
            within = sp.get("evaluations_to_within_0.5") if phase == "all" else None
            rows.append([label, str(s["episodes"]), *(fmt(s.get(k), ".3f") for k in keys),
                         f"{100 * s['evaluate_fraction']:.0f}%", fmt(within, "d")])
    return md_table(head, rows)


def _extras_section(extras: Mapping[str, Any], out_hint: str) -> list[str]:
    lines = ["## (c) Quantization and transfer", ""]
    if int8 := extras.get("int8"):
        rows = [[str(run.get("model")), str(r.get("batch_size")), fmt(r.get("fp32_ms"), ".3f"),
                 fmt(r.get("int8_ms"), ".3f"), f"{fmt(r.get('speedup'))}x", str(run.get("backend", "-")),
                 str(run.get("threads", "-"))]
                for run in int8["data"].get("runs") or [] for r in run.get("results") or []]
        lines += [f"From `{int8['path']}` (`scripts/bench_int8.py`; untrained weights, latency only):", "",
                  *md_table(["model", "batch", "fp32 ms", "int8 ms", "speed-up", "backend", "threads"], rows)]
        if int8["data"].get("note"):
            lines += ["", f"Note: {int8['data']['note']}"]
    else:
        lines.append(f"int8: not run here (`python scripts/bench_int8.py --out {out_hint}/int8.json`, then rerun "
                     "the benchmark to include it).")
    lines.append("")
    if tr := extras.get("transfer"):
        text = json.dumps(tr["data"], indent=1, default=str)
        lines += [f"Transfer, from `{tr['path']}` (`scripts/bench_transfer.py`):", "",
                  "```json", text[:3000] + ("\n..." if len(text) > 3000 else ""), "```"]
    else:
        lines.append("transfer: not run here (`scripts/bench_transfer.py`, when present, writing "
                     f"`{out_hint}/transfer.json`).")
    return lines


def render_report(results: Mapping[str, Any]) -> str:
    """``report.md``: the tables, the published numbers next to ours and what differs."""
    cfg, env, data, model = results["config"], results["environment"], results["data"], results["model"]
    base = results["base"]
    name = model.get("name") or "model"
    ft = next((m["finetune"] for m in results["methods"] if m.get("finetune")), None)
    preset = cfg.get("preset") or "custom"
    lines = [f"# amc benchmark: {name} on {data['dataset']} at {cfg['target']} ({preset})", ""]
    if results.get("command"):
        lines += ["```", results["command"], "```", ""]
    trained = (f", trained {model['trained_epochs']} of {model['planned_epochs']} planned epochs"
               if model.get("trained_epochs") is not None and model.get("planned_epochs") else "")
    lines += [
        f"- created {results['created']}; wall time of this call {results['wall_time_s']:.0f} s "
        f"(stages reused from an earlier call: {', '.join(k for k, v in results['computed_now'].items() if not v) or 'none'})",
        f"- machine: {env['platform']}, {env['cpu_count']} CPUs, torch {env['torch']}, {env['device']}; "
        f"torch threads {env['torch_threads']}, latency threads {env['latency_threads']}; load average "
        f"(1/5/15 min) {env['loadavg_start']} at the start, {env['loadavg_end']} at the end",
        f"- model: `{model['checkpoint']}` (sha256 {str(model['sha256'])[:12]}...{trained}), "
        f"{_count(base['macs'])} MACs, {_count(base['params'])} parameters",
        f"- data: {data['dataset']} (`{data.get('source') or data['data_dir']}`), train {data['train_images']}, val holdout "
        f"{data['val_size']} (seed {data['data_seed']}); reward on the first {data['reward_val_images']} val "
        f"images; test top-1 on {data['test_images']} test images",
        "",
        f"## (a) Compression at {cfg['target']}",
        "",
        "val top-1: the search's reward images, no fine-tuning. test top-1: the best policy rebuilt with "
        "`apply_policy`, no fine-tuning. KD-FT: after fine-tuning with knowledge distillation from the "
        "uncompressed model. Speed-up: uncompressed latency / compressed latency, beside the ideal 1 / MACs.",
        "",
        *compression_table(results),
        "",
    ]
    notes = []
    if any(not m.get("single_policy") for m in results["methods"]):
        notes.append(f"DDPG and the Optuna agents: {cfg['episodes']} evaluations each, the first {cfg['warmup']} "
                     "random (DDPG warm-up / sampler start-up). uniform: one policy, the largest uniform keep ratio "
                     "within the budget; its bisection probes the env (counted above) but only the budget picks it.")
    if cfg.get("eval_precision", "fp32") != "fp32":
        notes.append(f"The searches measured their reward under {cfg['eval_precision']} autocast; every val/test "
                     "top-1 in the tables is measured in fp32.")
    if ft:
        notes.append(f"Fine-tuning: {ft['steps']} steps of batch {cfg['ft_batch_size']} "
                     f"({ft['epochs_equivalent']:.2f} epochs), SGD + Nesterov, lr {cfg['ft_lr']:g} cosine to 0, "
                     f"{cfg.get('ft_precision', 'fp32')}" + (" channels-last" if cfg.get("ft_channels_last") else "")
                     + ", "
                     + (f"KD T={cfg['kd_temperature']:g}, alpha={cfg['kd_alpha']:g}" if cfg["kd"] else "no KD")
                     + f"; {fmt(ft.get('train_time_s'), '.0f')} s of training per model"
                     + (f" over {len(ft['seeds'])} fine-tuning seeds ({', '.join(map(str, ft['seeds']))}; mean ± "
                        "sample std)." if len(ft.get("seeds") or []) > 1 else "."))
    lat = results["latency"]
    notes.append(f"Latency: median of {lat['rounds']} interleaved rounds, each the median of >= "
                 f"{lat['min_time_s']:g} s of runs, {lat['threads']} thread(s), random input, eval mode, CPU."
                 if lat["results"] else "Latency: not measured in this run (--no-latency).")
    if any((m.get("finetune") or {}).get("test_top1", -1) >= base["test_top1"] for m in results["methods"]):
        notes.append("A fine-tuned model matching or beating the uncompressed one usually means the uncompressed "
                     "model is undertrained: the fine-tuning steps train the student further, the teacher is "
                     "not trained for them.")
    lines += [f"- {n}" for n in notes] + [""]

    rows = [[p["source"], p["model"], "CIFAR-10", fmt(p["base"]), fmt(p["pruned"]), fmt(p["finetuned"]),
             _delta(p["finetuned"], p["base"])] for p in results["published"]]
    ours = f"{data['dataset']} ({data['test_images']} test images)"
    for m in results["methods"]:
        f_ = (m.get("finetune") or {}).get("test_top1")
        rows.append([f"this run: {m['agent']}", name, ours, fmt(base["test_top1"]), fmt(m["test_top1"]),
                     fmt(f_), _delta(f_, base["test_top1"])])
    lines += ["### Next to the published numbers", "",
              *md_table(["source", "model", "data", "uncompressed", "right after pruning", "fine-tuned",
                         "change (fine-tuned)"], rows),
              "", "What differs from the published setting:", ""]
    diffs = [
        f"**Model**: {name} ({_count(base['params'])} parameters, {_count(base['macs'])} MACs), not "
        "ResNet-56 (0.85 M, ~125 M) or Plain-20: a smaller network has less redundancy, so the same MACs ratio "
        "costs it more accuracy.",
        f"**Base accuracy**: our uncompressed model reaches {fmt(base['test_top1'])} test top-1"
        + (f" after {model['trained_epochs']} of {model['planned_epochs']} planned epochs (a partly trained model)"
           if model.get("trained_epochs") and model.get("planned_epochs")
           and model["trained_epochs"] < model["planned_epochs"] else "")
        + "; compare the changes, not the absolute numbers.",
        f"**Search budget**: {cfg['episodes']} evaluations with {cfg['warmup']} warm-up, not AMC's 800 episodes "
        f"with 100 warm-up; reward on {data['reward_val_images']} val images (AMC: 5,000).",
        "**Fine-tuning**: " + (f"{ft['steps']} steps ({ft['epochs_equivalent']:.2f} epochs) with KD"
                               if ft else "none") + ", where the published numbers come from full fine-tuning runs.",
        f"**Hardware**: a CPU with {env.get('cpu_count')} cores, load average {env['loadavg_start']} at the start"
        + (" (above the core count: other jobs shared them, and every timing here is slower than on an idle "
           "machine)" if env["loadavg_start"][0] > (env.get("cpu_count") or 1) + 0.5 else
           " (about what the benchmark's own threads account for)")
        + "; latency is CPU latency (AMC timed a Pixel-1 phone for MobileNet, not CIFAR models).",
        ("**Data**: CIFAR-10 decoded from image files (the JPEG export: compression artefacts), not the original "
         "binary batches; " if data["dataset"] == "cifar10" and data.get("image_files") else
         f"**Data**: {data['dataset']}, not CIFAR-10; " if data["dataset"] != "cifar10" else "**Data**: CIFAR-10; ")
        + f"{data['train_images']} train images after the {data['val_size']}-image val holdout"
        + (f"; test top-1 on a {data['test_images']}-image sample of the {data['test_split_images']}-image "
           "test split" if data["test_images"] < data["test_split_images"] else "") + ".",
        f"**Pruning**: channel pruning by L1 norm ({cfg['importance']}), lower bound {cfg['lbound']:g}, channels "
        f"rounded to multiples of {cfg['round_to']}, " + ("with" if cfg["reconstruct"] else "without")
        + " AMC's least-squares reconstruction; residual-coupled channels share one ratio (one decision per group).",
    ]
    lines += [*(f"- {d}" for d in diffs), "", "## (b) Search speed", "",
              "Seconds per evaluation (env episode), the first one left out; `agent + recording` is everything "
              "outside the env (action selection, DDPG updates / sampler, writing the episode).", "",
              *speed_table(results), ""]
    setup = ", ".join(f"{a} {fmt(s.get('setup_s'), '.1f')} s" for a, s in results["search_speed"].items())
    lines += [f"Set-up per search (data, model, env, base evaluation): {setup}.", "",
              *_extras_section(results.get("extras") or {}, results.get("out_dir") or "OUT")]
    stages = [[st, f"{v['wall_s']:.1f}", str(v["loadavg_start"]), str(v["loadavg_end"])]
              for st, v in results["stages"].items()]
    head = ["stage", "wall s", "load average start", "load average end"]
    lines += ["", "## Stages", "", *md_table(head, stages), ""]
    return "\n".join(lines)
