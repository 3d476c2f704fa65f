"""What every benchmark shares: timing a search's episodes, the machine and its load, mean ± std,
and stages that are reused when their result exists (run-or-resume).

* :class:`TimedEnv` wraps any Gymnasium env that reports ``info["timing"]`` (as
  :class:`envs.CompressionEnv` does) and records, per episode, the env's own split, the rest of the
  env's time and the agent's time in between.
* :func:`machine_info` and :func:`loadavg` go into every benchmark's JSON: a timing taken on a busy
  2-core machine means little without them.
* :func:`stage` times a stage and records the load average around it; :func:`read_result` reads a
  stage's earlier result (or ``None``, so that it runs again).
* :class:`Experiment` is what every script under ``scripts/`` is: its own arguments and a body that
  returns its results; the harness adds ``--out`` and ``--threads``, pins the threads, turns an
  :class:`amc.errors.AmcError` into one ``error:`` line (exit 2), and writes the results as JSON
  with the command, the machine, the load average before and after, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

__all__ = ["TIMING_KEYS", "TimedEnv", "episode_split", "evaluations_to_within", "stats", "mean_std", "pm",
           "md_table", "fmt", "safe_name", "changed_keys", "loadavg", "machine_info", "read_result", "stage",
           "Experiment", "search_once"]

logger = logging.getLogger(__name__)

#: the per-episode parts the env reports in ``info["timing"]`` (seconds)
TIMING_KEYS = ("prune", "reconstruct", "quantize", "proxy", "evaluate")


class TimedEnv(gym.Wrapper):
    """Times the episodes of the env it wraps (for the search-speed benchmarks).

    At the end of each episode it appends to ``records`` a dict of seconds: the env's own split
    (:data:`TIMING_KEYS`, from ``info["timing"]``), ``env_other`` (the rest of the env's steps and
    resets: clipping, observations, costs), ``agent`` (everything outside the env since the previous
    episode ended: action selection, learning, recording the episode) and ``episode_s`` (their sum).
    With a search: ``run_search(cfg, env_factory=lambda *a, **k: TimedEnv(CompressionEnv(*a, **k), rec))``.
    """

    def __init__(self, env: gym.Env, records: list[dict[str, float]] | None = None) -> None:
        super().__init__(env)
        self.records: list[dict[str, float]] = records if records is not None else []
        self._mark: float | None = None  # when control last went back to the agent
        self._env_s = 0.0
        self._agent_s = 0.0

    def _timed(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``: its time is the env's, the time since the previous call the agent's."""
        t = time.perf_counter()
        if self._mark is not None:
            self._agent_s += t - self._mark
        out = call(*args, **kwargs)
        self._mark = time.perf_counter()
        self._env_s += self._mark - t
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        return self._timed(self.env.reset, seed=seed, options=options)

    def step(self, action: Any) -> Any:
        out = self._timed(self.env.step, action)
        if out[2] or out[3]:
            timing = (out[4] or {}).get("timing") or {}
            rec = {k: float(timing.get(k, 0.0) or 0.0) for k in TIMING_KEYS}
            self.records.append({**rec, "env_other": max(0.0, self._env_s - sum(rec.values())),
                                 "agent": self._agent_s, "episode_s": self._env_s + self._agent_s})
            self._env_s = self._agent_s = 0.0
        return out


def episode_split(records: Sequence[Mapping[str, float]],
                  phases: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Mean seconds per episode and its split, over all episodes (``"all"``) and per phase.

    ``records`` are :class:`TimedEnv` records; ``phases`` (one label per record, e.g. DDPG's
    ``warmup``/``explore`` from ``episodes.csv``) adds one entry per label. The first episode is left
    out when there are others: it pays one-off costs (importance ranking, caches).
    Each entry has ``episodes``, ``episode_s``, the :data:`TIMING_KEYS`, ``env_other``, ``agent`` and
    ``evaluate_fraction`` (the share of the episode spent evaluating the reward).
    """
    idx = list(range(1 if len(records) > 1 else 0, len(records)))
    groups: dict[str, list[int]] = {"all": idx}
    if phases is not None and len(phases) == len(records):
        for i in idx:
            if phases[i]:
                groups.setdefault(str(phases[i]), []).append(i)
    out: dict[str, dict[str, float]] = {}
    for name, ids in groups.items():
        if not ids:
            continue
        keys = ("episode_s", *TIMING_KEYS, "env_other", "agent")
        mean = {k: float(np.mean([float(records[i].get(k, 0.0)) for i in ids])) for k in keys}
        mean["evaluate_fraction"] = mean["evaluate"] / mean["episode_s"] if mean["episode_s"] > 0 else 0.0
        out[name] = {"episodes": len(ids), **mean}
    return out


def evaluations_to_within(episodes_csv: str | os.PathLike, points: float = 0.5) -> int | None:
    """How many evaluations a search needed before its best val top-1 came within ``points`` of its
    final best (``None`` without an episode log)."""
    from agents._recorder import read_episodes

    acc = [float(r["accuracy"]) for r in read_episodes(episodes_csv) if r.get("accuracy") not in (None, "")]
    if not acc:
        return None
    best = np.maximum.accumulate(np.asarray(acc))
    return int(np.argmax(best >= best[-1] - points)) + 1


def stats(values: Iterable[Any]) -> dict[str, Any]:
    """``mean``, sample ``std`` (0 for one value), ``n``, ``min`` and ``max`` of the values not None."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v),
            "min": min(v), "max": max(v)}


def mean_std(runs: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float | None]:
    """``{key: mean, key_std: sample std (0 for one run)}`` over the runs that have ``key``."""
    out: dict[str, float | None] = {}
    for k in keys:
        st = stats(r.get(k) for r in runs)
        out[k], out[f"{k}_std"] = st["mean"], st["std"]
    return out


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> list[str]:
    """The keys whose values differ between two flat configs, less ``ignore`` (sorted)."""
    return sorted(k for k in old.keys() | new.keys() if k not in ignore and old.get(k) != new.get(k))


def fmt(v: Any, spec: str = ".2f") -> str:
    """``v`` formatted by ``spec``, or ``-`` for None, NaN and infinities (table cells)."""
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def pm(st: Mapping[str, Any], spec: str = ".2f") -> str:
    """A :func:`stats` entry as ``mean ± std`` (the mean alone for one value, ``-`` for none)."""
    if st.get("n", 0) > 1:
        return f"{fmt(st['mean'], spec)} ± {fmt(st['std'], spec)}"
    return fmt(st.get("mean"), spec)


def safe_name(name: str, sub: str = "-") -> str:
    """``name`` as a file name: every character but letters, digits and ``-_.`` becomes ``sub``."""
    return "".join(c if c.isalnum() or c in "-_." else sub for c in name)


def md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table."""
    return ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def loadavg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (``None`` where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """Python, torch, CPU count, torch threads, processor and the load average, for a result's header."""
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
            "loadavg": loadavg()}


def read_result(path: Path) -> dict[str, Any] | None:
    """A JSON mapping, e.g. a stage's earlier result, or ``None`` when it is missing or unreadable (a
    stage then runs again)."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("ignoring unreadable %s (%s)", path, e)
        return None
    return doc if isinstance(doc, dict) else None


@contextmanager
def stage(name: str, times: dict[str, Any]) -> Iterator[None]:
    """Logs a stage, times it and records the load average around it into ``times[name]``."""
    t0, load0 = time.perf_counter(), loadavg()
    logger.info("bench: %s (load average %s)", name, load0)
    try:
        yield
    finally:
        times[name] = {"wall_s": round(time.perf_counter() - t0, 2), "loadavg_start": load0,
                       "loadavg_end": loadavg()}


def search_once(run_dir: str | os.PathLike, **config: Any) -> dict[str, Any]:
    """A search's summary: read when ``run_dir`` holds a finished search, else the search is run
    (resuming an interrupted one) with ``agents.search.SearchConfig(**config)``."""
    from agents.search import SearchConfig, run_search

    run_dir = Path(run_dir)
    done = read_result(run_dir / "summary.json")
    if done is not None and not done.get("interrupted"):
        return done
    return run_search(SearchConfig(**config, run_dir=str(run_dir), resume=run_dir.exists()))


@dataclass
class Experiment:
    """A benchmark script as a short configuration of the harness.

    Attributes:
        doc: the script's docstring (its first line is the ``--help`` summary, the rest its epilog).
        arguments: adds the script's own options to the parser.
        body: ``body(args) -> results``; ``args.out`` is the output folder (``result`` set) or the
            JSON file, as a ``Path``, and ``torch`` runs at ``args.threads`` threads.
        out: default ``--out``.
        result: the JSON file's name inside the ``--out`` folder (``None``: ``--out`` is the file).
        threads: default ``--threads`` (1: on a shared 2-core machine more threads run slower).
    """

    doc: str
    arguments: Callable[[argparse.ArgumentParser], None]
    body: Callable[[argparse.Namespace], Mapping[str, Any]]
    out: str
    result: str | None = None
    threads: int = 1

    def parser(self) -> argparse.ArgumentParser:
        head, _, rest = self.doc.strip().partition("\n")
        p = argparse.ArgumentParser(description=head, epilog=rest or None,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        self.arguments(p)
        what = "output folder" if self.result else "the results' JSON file"
        p.add_argument("--out", type=Path, default=Path(self.out), help=f"{what} (default {self.out})")
        p.add_argument("--threads", type=int, default=self.threads,
                       help=f"torch CPU threads (default {self.threads})")
        return p

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse, run, write ``{command, created, machine, loadavg_end, wall_s, **results}``; the exit code."""
        from amc.errors import AmcError
        from amc.utils import atomic_write_json

        args = self.parser().parse_args(argv)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if args.threads < 1:
            print(f"error: --threads {args.threads}: give a count >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
        path = args.out / self.result if self.result else args.out
        header = {"command": " ".join(["python", *sys.argv[:1], *(sys.argv[1:] if argv is None else argv)]),
                  "created": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine_info()}
        t0 = time.perf_counter()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            results = self.body(args)
        except AmcError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; finished stages are kept and reused by the same command", file=sys.stderr)
            return 130
        doc = {**header, "loadavg_end": loadavg(), "wall_s": round(time.perf_counter() - t0, 2), **results}
        atomic_write_json(path, doc)
        print(f"wrote {path} (load average {header['machine']['loadavg']} -> {doc['loadavg_end']})")
        return 0
