"""The outputs every search writes, whatever the agent: one recorder, one layout.

A run directory holds::

    config.yaml        the resolved SearchConfig (written when the recorder is created)
    episodes.csv       one row per finished episode (columns: ``EPISODE_COLUMNS``)
    best_policy.json   the best policy so far (``amc.policy.Policy``), rewritten atomically on improvement
    best_policy.png    bar chart of its per-group keep ratios / per-layer bits (same moments)
    summary.json       the run's summary (``SearchRecorder.summary``)
    search/            TensorBoard events (the run "search" next to the pretraining's "pretrain"):
                       ``search/*`` and the agent's ``agent/*`` scalars (e.g. ``agent/actor_loss``), step =
                       episode number, and the ``search/best_policy`` figure

Resuming keeps one history: rows and TensorBoard steps continue after the last kept episode (the
CSV is truncated to it, TensorBoard's ``purge_step`` hides later events of the interrupted session).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amc.policy import Policy
from amc.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["SearchRecorder", "BestRecord", "EPISODE_COLUMNS", "plot_policy", "read_episodes", "write_csv"]

logger = logging.getLogger(__name__)

#: Columns of ``episodes.csv``; a value the episode does not define is left empty.
EPISODE_COLUMNS: tuple[str, ...] = (
    "episode", "phase", "reward", "best_reward", "accuracy", "macs_ratio", "params_ratio", "size_ratio",
    "bitops_ratio", "latency_ms", "noise_sigma", "actor_loss", "critic_loss", "episode_time_s", "wall_time_s",
)
#: metric keys taken from ``info["metrics"]`` into rows and ``search/<key>`` scalars
_METRIC_KEYS = ("accuracy", "macs_ratio", "params_ratio", "size_ratio", "bitops_ratio", "latency_ms")
_TRAIN_KEYS = ("actor_loss", "critic_loss")
_RATIO_KEYS = ("macs_ratio", "params_ratio", "size_ratio", "bitops_ratio")
_TB_DIR = "search"
_OLD_TB_DIR = "tb"  # the earlier name: a resumed older run moves its events to _TB_DIR
_OUTPUTS = ("episodes.csv", "best_policy.json", "best_policy.png", "summary.json")


@dataclass
class BestRecord:
    """The best episode so far (highest reward; ties keep the earlier one)."""

    episode: int
    reward: float
    accuracy: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    actions: list[float] = field(default_factory=list)
    policy: Policy | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "metrics": dict(self.metrics), "actions": list(self.actions),
                "policy": None if self.policy is None else self.policy.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BestRecord:
        return cls(**{**d, "policy": None if d.get("policy") is None else Policy.from_dict(d["policy"])})


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, ".8g")
    return str(v)


def _after_existing_event_files(tb_dir: Path) -> None:
    """Make a new event file sort after the existing ones.

    TensorBoard reads a run's event files in name order, and a resumed session's ``purge_step`` only
    drops the earlier session's later steps if its file comes after theirs. Names start with the
    creation time in whole seconds, followed by a per-process counter that sorts as text ("10" <
    "9"). A resume within the same second as the previous file could therefore sort first and purge
    the whole history, so wait for the next second in that case (at most one second, only then).
    """
    stamps = [int(t) for f in tb_dir.glob("events.out.tfevents.*") if (t := f.name.split(".")[3]).isdigit()]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)


def read_episodes(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of an ``episodes.csv`` (numbers parsed, empty cells ``None``); a torn last line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            if None in raw or None in raw.values() or not (raw.get("episode") or "").isdigit():
                continue  # a torn line (process killed mid-write), or no episode number
            row = {k: v if k == "phase" else _num(v) for k, v in raw.items()}
            rows.append({**row, "episode": int(raw["episode"])})
    return rows


def _cells(rows: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, str]]:
    """``rows`` as ``episodes.csv`` cells (``EPISODE_COLUMNS``, numbers formatted)."""
    return ({k: _fmt(r.get(k)) for k in EPISODE_COLUMNS} for r in rows)


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` to the CSV file ``path`` under a header of ``columns``, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _unique_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per episode (the last one written wins), in episode order."""
    by_episode = {r["episode"]: r for r in rows}
    return [by_episode[k] for k in sorted(by_episode)]


def plot_policy(policy: Policy, *, title: str | None = None) -> Any:
    """A matplotlib ``Figure``: per-group keep ratios (prune) and/or per-layer w/a bits (quant)."""
    from matplotlib.figure import Figure

    panels = ["keep"] if policy.groups or not policy.has_bits else []
    panels += ["bits"] if policy.has_bits else []
    n_max = max(len(policy.groups), len(policy.layers), 1)
    fig = Figure(figsize=(min(4.0 + 0.35 * n_max, 24.0), 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        if panel == "keep":
            names = [g.layers[0] + (f" (+{len(g.layers) - 1})" if len(g.layers) > 1 else "") for g in policy.groups]
            vals = [g.keep_ratio for g in policy.groups]
            bars = ax.bar(range(len(vals)), vals, color="tab:blue")
            for b, g in zip(bars, policy.groups):
                ax.annotate(f"{g.channels}/{g.total}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7)
            ax.set_ylim(0, 1.1)
            ax.set_ylabel("keep ratio")
        else:
            names = [ly.name for ly in policy.layers]
            w = [ly.w_bits or 32 for ly in policy.layers]
            a = [ly.a_bits or 32 for ly in policy.layers]
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], w, width=0.4, label="weight bits", color="tab:orange")
            ax.bar([x + 0.2 for x in xs], a, width=0.4, label="activation bits", color="tab:green")
            ax.set_ylim(0, min(max(w + a) + 1, 33))
            ax.set_ylabel("bits")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


class SearchRecorder:
    """Writes a search's outputs (see the module docstring); shared by every agent.

    :param run_dir: the run directory (created).
    :param agent: agent name, recorded in the policy and the summary.
    :param episodes: planned number of episodes (for the policy's ``search`` block and the summary).
    :param seed: the search seed.
    :param base_accuracy: val top-1 (%) of the uncompressed model (``env.base_accuracy``).
    :param target: budget string, e.g. ``"macs=0.5"``.
    :param config: resolved config, written to ``config.yaml`` (None: not written).
    :param provenance: the policy blocks saying where the search's model and data came from
        (``{"checkpoint": ..., "data": ...}``, :func:`amc.policy.checkpoint_record` and
        :func:`amc.policy.data_record`), stamped on every recorded policy.
    :param resume: False: start a fresh history (this recorder's previous outputs are deleted);
        True: continue from the files (last CSV row, ``best_policy.json``). An agent whose checkpoint
        is older than the files calls :meth:`restore` with the recorder state it checkpointed.
    :param tensorboard, plot: switch TensorBoard events / the bar chart off (e.g. in tests).
    :param listeners: callables receiving each episode's row (progress bars).

    Agents call :meth:`record_episode` once per finished episode with the env's last ``info``,
    :meth:`state_dict` when they checkpoint, and :meth:`close` (optionally ``interrupted=True``) at
    the end, which writes ``summary.json``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        agent: str,
        episodes: int | None = None,
        seed: int | None = None,
        base_accuracy: float | None = None,
        target: str | None = None,
        config: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Mapping[str, Any]] | None = None,
        resume: bool = False,
        tensorboard: bool = True,
        plot: bool = True,
        listeners: Iterable[Callable[[dict[str, Any]], None]] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "episodes.csv"
        self.best_policy_path = self.run_dir / "best_policy.json"
        self.tb_dir = self.run_dir / _TB_DIR
        self.agent = agent
        self.episodes = episodes
        self.seed = seed
        self.base_accuracy = base_accuracy
        self.target = target
        self.provenance = {k: dict(v) for k, v in (provenance or {}).items()}
        self.tensorboard = tensorboard
        self.plot = plot
        self.listeners: list[Callable[[dict[str, Any]], None]] = list(listeners or [])
        self.episode = 0
        self.best: BestRecord | None = None
        self._elapsed_before = 0.0
        self._t0 = self._t_last = time.monotonic()
        self._writer: Any = None
        self._purge_step: int | None = None
        if config is not None:
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))
        if resume:
            old_tb = self.run_dir / _OLD_TB_DIR
            if old_tb.is_dir() and not self.tb_dir.exists():
                old_tb.rename(self.tb_dir)
            self._load_from_files()
        else:  # a fresh history: this recorder's previous outputs go
            for name in _OUTPUTS:
                (self.run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(self.tb_dir, ignore_errors=True)

    @property
    def wall_time_s(self) -> float:
        """Search wall time over all sessions of this run (s)."""
        return self._elapsed_before + (time.monotonic() - self._t0)

    # ----------------------------------------------------------------- start / resume
    def _load_from_files(self) -> None:
        rows = read_episodes(self.csv_path)
        last = rows[-1] if rows else {"episode": 0}
        self.episode = last["episode"]
        self._elapsed_before = float(last.get("wall_time_s") or 0.0)
        self.best = None
        if rows and self.best_policy_path.is_file():
            pol = Policy.load(self.best_policy_path)
            ep, reward = pol.search.get("episode"), _num(pol.search.get("reward"))
            if ep is not None and reward is not None and int(ep) <= self.episode:
                self.best = BestRecord(episode=int(ep), reward=reward, accuracy=_num(pol.accuracy.get("val_top1")),
                                       metrics=dict(pol.achieved), policy=pol)
        if rows and self.best is None:
            top = max(rows, key=lambda r: (r["reward"] if r.get("reward") is not None else -math.inf))
            if top.get("reward") is not None:
                self.best = BestRecord(episode=top["episode"], reward=top["reward"], accuracy=top.get("accuracy"))
        self._set_purge_step(self.episode + 1)
        logger.info("recorder: continuing %s after episode %d", self.run_dir, self.episode)

    def state_dict(self) -> dict[str, Any]:
        """What an agent's checkpoint must hold to :meth:`restore` this recorder exactly."""
        rows = [r for r in read_episodes(self.csv_path) if r["episode"] <= self.episode]
        return {"episode": self.episode, "wall_time_s": self.wall_time_s,
                "best": None if self.best is None else self.best.to_dict(),
                "rows": _unique_rows(rows)}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Rewind to a checkpointed state: rows after it are dropped, the best policy is rewritten.

        ``None`` rewinds to an empty history (a resume that found no checkpoint).
        """
        state = state or {"episode": 0, "wall_time_s": 0.0, "best": None}
        self.episode = int(state["episode"])
        self._elapsed_before = float(state.get("wall_time_s") or 0.0)
        self._t0 = self._t_last = time.monotonic()
        self.best = None if state.get("best") is None else BestRecord.from_dict(state["best"])
        rows = [r for r in read_episodes(self.csv_path) if r["episode"] <= self.episode]
        saved = state.get("rows")
        if saved is not None:  # the checkpoint's copy of the log is the truth up to its episode
            if [r["episode"] for r in rows] != [r["episode"] for r in saved]:
                logger.warning("%s does not match the checkpoint (%d rows for episodes 1..%d, %d expected): "
                               "restored from the checkpoint", self.csv_path, len(rows), self.episode, len(saved))
            rows = saved
        write_csv(self.csv_path, EPISODE_COLUMNS, _cells(_unique_rows(rows)))
        if self.best is not None and self.best.policy is not None:
            self._write_best(log_figure=False)
        else:
            self.best_policy_path.unlink(missing_ok=True)
            (self.run_dir / "best_policy.png").unlink(missing_ok=True)
        self._set_purge_step(self.episode + 1)

    def rewrite_log(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace ``episodes.csv`` with ``rows`` (an agent restoring a damaged log) and continue after them.

        ``best_reward`` is recomputed where a row lacks it; the best episode is found again as on resume.
        """
        rows = _unique_rows(dict(r) for r in rows)
        best = -math.inf
        for r in rows:
            reward = _num(r.get("reward"))
            best = max(best, reward) if reward is not None else best
            if r.get("best_reward") is None and best > -math.inf:
                r["best_reward"] = best
        write_csv(self.csv_path, EPISODE_COLUMNS, _cells(rows))
        self._load_from_files()

    def _set_purge_step(self, step: int) -> None:
        self._purge_step = step
        self._close_writer()

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ----------------------------------------------------------------- TensorBoard
    @property
    def writer(self) -> Any:
        """The ``SummaryWriter`` (created on first use; None when TensorBoard is off)."""
        if self.tensorboard and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            _after_existing_event_files(self.tb_dir)
            self._writer = SummaryWriter(log_dir=str(self.tb_dir), purge_step=self._purge_step, flush_secs=10)
            self._purge_step = None
        return self._writer

    # ----------------------------------------------------------------- episodes
    def record_episode(
        self,
        info: Mapping[str, Any],
        *,
        noise_sigma: float | None = None,
        phase: str | None = None,
        extra: Mapping[str, float | None] | None = None,
    ) -> dict[str, Any]:
        """Record one finished episode from the env's last-step ``info``; returns the CSV row.

        :param info: must hold ``metrics`` (with ``reward``); ``policy`` and ``actions`` where given.
        :param noise_sigma: the episode's exploration sigma (action units), if the agent has one.
        :param phase: e.g. ``"warmup"`` / ``"explore"`` (free text).
        :param extra: more scalars: ``actor_loss``/``critic_loss`` (logged as ``agent/*``), other
            bare keys as ``search/<key>``, keys with a ``/`` as given; CSV columns where they exist.
        """
        metrics = dict(info.get("metrics") or {})
        if "reward" not in metrics:
            raise ValueError("record_episode: info['metrics'] has no 'reward' (is this the last step's info?)")
        self.episode += 1
        now = time.monotonic()
        episode_time, self._t_last = now - self._t_last, now
        reward = float(metrics["reward"])
        if self.best is None or reward > self.best.reward:
            policy = info.get("policy")
            self.best = BestRecord(episode=self.episode, reward=reward, accuracy=_num(metrics.get("accuracy")),
                                   metrics={k: v for k, v in metrics.items() if _num(v) is not None},
                                   actions=[float(a) for a in info.get("actions") or []],
                                   policy=None if policy is None else self._annotate(policy, metrics, reward))
            if self.best.policy is not None:
                self._write_best(log_figure=True)
        row: dict[str, Any] = {
            "episode": self.episode, "phase": phase or "", "reward": reward, "best_reward": self.best.reward,
            **{k: _num(metrics.get(k)) for k in _METRIC_KEYS},
            "noise_sigma": _num(noise_sigma), "episode_time_s": episode_time, "wall_time_s": self.wall_time_s,
        }
        tags: dict[str, float | None] = {f"search/{k}": row[k]
                                         for k in ("reward", "best_reward", *_METRIC_KEYS, "noise_sigma")}
        for key, val in (extra or {}).items():
            col = key.rsplit("/", 1)[-1]
            tag = key if "/" in key else (f"agent/{key}" if key in _TRAIN_KEYS else f"search/{key}")
            row.setdefault(col, _num(val))
            tags[tag] = _num(val)
        self._append_row(row)
        if self.writer is not None:
            for tag, v in tags.items():
                if (f := _num(v)) is not None:
                    self.writer.add_scalar(tag, f, self.episode)
        for listener in self.listeners:
            listener(row)
        return row

    def _annotate(self, policy: Policy, metrics: Mapping[str, Any], reward: float) -> Policy:
        pol = Policy.from_dict(policy.to_dict())  # a copy: the env's object stays untouched
        pol.search.update({"agent": self.agent, "episode": self.episode, "episodes": self.episodes,
                           "seed": self.seed, "reward": reward})
        for key, block in self.provenance.items():  # "checkpoint", "data"
            setattr(pol, key, dict(block))
        if self.base_accuracy is not None:
            pol.accuracy.setdefault("base_val_top1", float(self.base_accuracy))
        if _num(metrics.get("accuracy")) is not None:
            pol.accuracy.setdefault("val_top1", float(metrics["accuracy"]))
        for k in _RATIO_KEYS:
            if _num(metrics.get(k)) is not None:
                pol.achieved.setdefault(k, float(metrics[k]))
        return pol

    def _append_row(self, row: Mapping[str, Any]) -> None:
        new = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        try:
            with self.csv_path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=EPISODE_COLUMNS, lineterminator="\n")
                if new:
                    w.writeheader()
                w.writerows(_cells([row]))
        except OSError as e:
            if e.filename is None:  # a failed write (full disk) names no file
                e.filename = str(self.csv_path)
            raise

    def _write_best(self, *, log_figure: bool) -> None:
        best = self.best
        best.policy.save(self.best_policy_path)
        if not self.plot:
            return
        acc = "" if best.accuracy is None else f"  acc {best.accuracy:.2f}%"
        macs = best.policy.achieved.get("macs_ratio")
        macs_s = "" if _num(macs) is None else f"  MACs ratio {float(macs):.3f}"
        fig = plot_policy(best.policy, title=f"{self.agent} best @ episode {best.episode}: reward {best.reward:.4f}"
                          f"{acc}{macs_s}")
        self.write_figure(fig, "best_policy.png", tag="search/best_policy" if log_figure else None,
                          step=best.episode)

    def write_figure(self, fig: Any, name: str, *, tag: str | None = None, step: int = 0, dpi: int = 100
                     ) -> None:
        """Save ``fig`` as ``run_dir/name`` (PNG) and, given a ``tag``, log it to TensorBoard at ``step``."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        atomic_write_bytes(self.run_dir / name, buf.getvalue())
        if tag is not None and self.writer is not None:
            self.writer.add_figure(tag, fig, global_step=step, close=True)

    # ----------------------------------------------------------------- summary
    def summary(self, *, interrupted: bool = False, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The run's summary (also what ``summary.json`` holds)."""
        best = self.best
        wall = self.wall_time_s
        achieved: dict[str, Any] = {}
        if best is not None:  # the ratios of the policy and of the metrics (which win), the latency measured
            pol = best.policy.achieved if best.policy is not None else {}
            achieved = {k: v for k, v in {**pol, **best.metrics}.items()
                        if k in _RATIO_KEYS or (k == "latency_ms" and k in best.metrics)}
        out: dict[str, Any] = {
            "agent": self.agent,
            "episodes": self.episode,
            "episodes_planned": self.episodes,
            "seed": self.seed,
            "target": self.target,
            "base_accuracy": self.base_accuracy,
            "best_accuracy": None if best is None else best.accuracy,
            "best_reward": None if best is None else best.reward,
            "best_episode": None if best is None else best.episode,
            "achieved": achieved,
            "wall_time_s": round(wall, 3),
            "seconds_per_episode": round(wall / self.episode, 4) if self.episode else None,
            "interrupted": bool(interrupted),
            "run_dir": str(self.run_dir),
            "best_policy": str(self.best_policy_path) if best is not None and best.policy is not None else None,
        }
        out.update(extra or {})
        return out

    def write_summary(self, *, interrupted: bool = False, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write ``summary.json`` and flush TensorBoard (agents call it at their checkpoints)."""
        summary = self.summary(interrupted=interrupted, extra=extra)
        atomic_write_json(self.run_dir / "summary.json", summary)
        if self._writer is not None:
            self._writer.flush()
        return summary

    def close(self, *, interrupted: bool = False, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write ``summary.json``, close TensorBoard; returns the summary."""
        summary = self.write_summary(interrupted=interrupted, extra=extra)
        self._close_writer()
        return summary
