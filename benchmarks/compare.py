"""Compare finished searches: a table (mean +- std over seeds) and plots, from the runs' own files.

Every agent writes the same run directory (:mod:`agents._recorder`), so a comparison only reads
files: ``summary.json`` (agent, budget, best accuracy, achieved ratios, wall time, evaluations),
``episodes.csv`` (the learning curve), ``best_policy.json`` (the per-layer policy) and, for the
multi-objective agents, ``pareto.json`` (:mod:`agents.optuna_agents`).

:func:`compare_runs` writes into ``out_dir``::

    compare.md      the table (markdown), one row per agent and budget, then one row per run; with
                    ``test=True`` also each best policy's top-1 on the test split (no search saw it)
    compare.json    the same numbers (``format: amc-compare``)
    curves.png      best-so-far val top-1 vs evaluations per agent: mean line, +-1 std band over seeds
    pareto.png      accuracy vs cost: each multi-objective run's trials and front, the single-objective
                    results marked (only when a run has a ``pareto.json``)
    policies.png    the best policy of each agent and budget, per-layer keep ratios (and bits) side by side
    tb/             the figures and the table for TensorBoard (``tensorboard --logdir out_dir``)

Runs that share agent and budget (e.g. three seeds) form one group. "Evaluations" are env episodes:
``summary["evaluations"]`` where the agent reports it (Optuna agents: trials this run evaluated;
uniform/presets: probes including clipped ones), else the recorded episodes. "Best" is the episode of
highest reward (the recorder's best), and its accuracy is the val top-1 without fine-tuning.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from agents._recorder import read_episodes
from amc.errors import AmcError
from amc.policy import Policy
from amc.utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from benchmarks.harness import fmt, md_table, pm, read_result, stats

__all__ = ["RunResult", "load_run", "find_runs", "compare_runs", "group_runs", "best_so_far", "markdown_table",
           "front_accuracy", "policy_accuracy"]

logger = logging.getLogger(__name__)

_RATIO_KEYS = ("macs_ratio", "params_ratio", "size_ratio", "bitops_ratio", "latency_ms")


@dataclass
class RunResult:
    """What a comparison needs from one run directory."""

    run_dir: Path
    agent: str
    target: str | None
    seed: int | None
    evaluations: int
    episodes: int
    best_accuracy: float | None
    best_reward: float | None
    base_accuracy: float | None
    achieved: dict[str, float] = field(default_factory=dict)
    wall_time_s: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    policy: Policy | None = None
    pareto: dict[str, Any] | None = None
    test_accuracy: float | None = None  # filled by compare_runs(..., test=True)

    @property
    def multi_objective(self) -> bool:
        return self.pareto is not None

    @property
    def key(self) -> tuple[str, str]:
        return (self.agent, self.target or "-")

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields (not rows, policy, pareto), the multi-objective flag and the front's size."""
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("rows", "policy", "pareto")}
        return {**d, "run_dir": str(self.run_dir), "achieved": dict(self.achieved),
                "multi_objective": self.multi_objective,
                "pareto_size": None if self.pareto is None else len(self.pareto.get("front") or [])}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def load_run(run_dir: str | os.PathLike) -> RunResult:
    """Read one run directory (``AmcError`` if it holds no ``summary.json``)."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if not path.is_file():
        raise AmcError(f"{str(run_dir)!r} is not a finished search run (no summary.json); pass run directories "
                       "written by `amc search`")
    try:
        s = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AmcError(f"{path} is not valid JSON: {e}") from None
    rows = read_episodes(run_dir / "episodes.csv")
    policy = None
    if (run_dir / "best_policy.json").is_file():
        try:
            policy = Policy.load(run_dir / "best_policy.json")
        except AmcError as e:
            logger.warning("%s: best_policy.json unreadable (%s); its policy is left out", run_dir, e)
    episodes = int(s.get("episodes") or len(rows))
    evaluations = s.get("evaluations")
    achieved = {k: float(v) for k, v in (s.get("achieved") or {}).items() if _num(v) is not None}
    return RunResult(
        run_dir=run_dir, agent=str(s.get("agent") or "?"), target=s.get("target"),
        seed=None if s.get("seed") is None else int(s["seed"]),
        evaluations=int(evaluations) if evaluations is not None else len(rows) or episodes, episodes=episodes,
        best_accuracy=_num(s.get("best_accuracy")), best_reward=_num(s.get("best_reward")),
        base_accuracy=_num(s.get("base_accuracy")), achieved=achieved, wall_time_s=_num(s.get("wall_time_s")),
        rows=rows, policy=policy, pareto=read_result(run_dir / "pareto.json"),
    )


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories among ``paths``: a directory with ``summary.json``, or the direct children of a
    directory without one (``amc compare bench_out/agents``)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "summary.json").is_file():
            out.append(p)
        elif p.is_dir():
            kids = sorted(c for c in p.iterdir() if c.is_dir() and (c / "summary.json").is_file())
            if not kids:
                logger.warning("%s holds no search run (no summary.json), skipped", p)
            out.extend(kids)
        else:
            raise AmcError(f"run directory {str(p)!r} does not exist")
    uniq: dict[Path, Path] = {}
    for p in out:
        uniq.setdefault(p.resolve(), p)
    return list(uniq.values())


def best_so_far(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Accuracy of the best-reward episode among the first k recorded episodes, k = 1..len(rows)."""
    out = np.full(len(rows), np.nan)
    best_r, best_acc = -math.inf, math.nan
    for i, r in enumerate(rows):
        reward, acc = _num(r.get("reward")), _num(r.get("accuracy"))
        if reward is not None and reward > best_r:
            best_r, best_acc = reward, acc if acc is not None else math.nan
        out[i] = best_acc
    return out


def _by_key(runs: Iterable[RunResult], key: Any = lambda r: r.key) -> dict[Any, list[RunResult]]:
    """The runs grouped by ``key`` (default: agent and budget), in order of appearance."""
    groups: dict[Any, list[RunResult]] = {}
    for r in runs:
        groups.setdefault(key(r), []).append(r)
    return groups


def group_runs(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One entry per (agent, budget): the runs' seeds and mean/std of every number."""
    budgets = sorted({r.target for r in runs if not r.multi_objective and r.target})
    out = []
    for (agent, target), rs in _by_key(runs).items():
        ratio_keys = sorted({k for r in rs for k in r.achieved})
        best = max(rs, key=lambda r: (r.best_reward if r.best_reward is not None else -math.inf))
        out.append({
            "agent": agent, "target": target, "runs": len(rs), "seeds": [r.seed for r in rs],
            "multi_objective": any(r.multi_objective for r in rs),
            "evaluations": stats(r.evaluations for r in rs),
            "best_accuracy": stats(r.best_accuracy for r in rs),
            "best_reward": stats(r.best_reward for r in rs),
            "test_accuracy": stats(r.test_accuracy for r in rs),
            "wall_time_s": stats(r.wall_time_s for r in rs),
            "achieved": {k: stats(r.achieved.get(k) for r in rs) for k in ratio_keys},
            "base_accuracy": stats(r.base_accuracy for r in rs)["mean"],
            "best_run": str(best.run_dir),
            "pareto_size": stats(len(r.pareto.get("front") or []) for r in rs if r.pareto)["mean"],
            "front_at": {t: stats(front_accuracy(r, t) for r in rs) for t in budgets} if any(
                r.multi_objective for r in rs) else {},
        })
    return out


def front_accuracy(run: RunResult, target: str) -> float | None:
    """Best val top-1 among a multi-objective run's trials whose cost meets ``target`` (``macs=0.5``):
    its answer to the single-objective question at that budget."""
    if run.pareto is None or "=" not in target:
        return None
    metric, ratio = target.split("=", 1)
    key = metric + "_ratio" if metric != "latency" else "latency_ms"
    if run.pareto.get("metric") != key:
        return None
    return max((t["accuracy"] for t in run.pareto.get("trials") or []
                if t.get(key) is not None and t[key] <= float(ratio) + 1e-9), default=None)


# --------------------------------------------------------------------------------------------------
# the table


def markdown_table(result: Mapping[str, Any]) -> str:
    """The ``compare.md`` text for a :func:`compare_runs` result."""
    groups, runs = result["groups"], result["runs"]
    ratios = [k for k in _RATIO_KEYS if any(k in g["achieved"] for g in groups)]
    names = [k.removesuffix("_ratio") + (" ratio" if k.endswith("_ratio") else " (ms)") for k in ratios]
    has_test = any(g["test_accuracy"]["mean"] is not None for g in groups)
    lines = ["# Search comparison", ""]
    base = sorted({round(g["base_accuracy"], 2) for g in groups if g["base_accuracy"] is not None})
    if base:
        lines += [f"Uncompressed val top-1: {', '.join(f'{b:.2f} %' for b in base)}. Accuracies are val top-1 of the "
                  "best episode (highest reward) without fine-tuning; mean ± std over the runs (seeds) of each "
                  "agent and budget."
                  + (" The test top-1 is that best policy's on the test split, which no search saw (the val "
                     "accuracy is also what picked it, so it is optimistic)." if has_test else "")
                  + (" A multi-objective run's row gives the best trial of its front within each budget of the "
                     "other rows." if any(g["multi_objective"] for g in groups) else ""), ""]
    rows = []
    for g in groups:
        acc = pm(g["best_accuracy"])
        if g["multi_objective"]:
            at = "; ".join(f"{pm(st)} at {t.replace('=', ' <= ')}" for t, st in g["front_at"].items()
                           if st.get("mean") is not None)
            acc = f"front of {g['pareto_size']:.0f} points" + (f": {at}" if at else "") + f" (max {acc})"
        # a multi-objective run's "best" is its most accurate (least compressed) trial: no ratios to compare
        ratio_cells = [pm(g["achieved"].get(k, {}), ".2f" if k == "latency_ms" else ".3f") for k in ratios]
        rows.append([g["agent"], g["target"], str(g["runs"]), pm(g["evaluations"], ".0f"), acc,
                     *([pm(g["test_accuracy"])] if has_test else []),
                     *(["-"] * len(ratios) if g["multi_objective"] else ratio_cells),
                     pm(g["wall_time_s"], ".1f")])
    test = ["test top-1 (%)"] if has_test else []
    lines += md_table(["agent", "budget", "runs", "evaluations", "best val top-1 (%)",
                       *(f"its {t}" for t in test), *names, "wall time (s)"], rows)
    rows = [[f"`{r['run_dir']}`", r["agent"], fmt(r["seed"], "d"), str(r["target"]), str(r["evaluations"]),
             fmt(r["best_accuracy"]), *([fmt(r["test_accuracy"])] if has_test else []),
             *(fmt(r["achieved"].get(k), ".3f") for k in ratios), fmt(r["wall_time_s"], ".1f")] for r in runs]
    lines += ["", "## Runs", "", *md_table(["run", "agent", "seed", "budget", "evaluations",
                                            "best val top-1 (%)", *test, *names, "wall time (s)"], rows)]
    if result.get("figures"):
        lines += ["", "## Figures", "", *(f"![{n}]({Path(p).name})" for n, p in result["figures"].items())]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# held-out accuracy of the best policies


def policy_accuracy(run: RunResult, *, split: str = "test", device: str = "cpu",
                    cache: dict[Any, Any] | None = None) -> float | None:
    """Top-1 (%) on ``split`` of ``run``'s best policy, rebuilt the way the env built it.

    The run's ``config.yaml`` names the checkpoint (or the run's own ``pretrain/final.pt``), the data
    and the val holdout; :func:`amc.compress.apply_policy` compresses the model as the policy's
    ``scoring`` records (the env's ``Pruner`` seed, reconstruction and calibration images). ``cache``
    shares datasets and models between runs. None when the run has no best policy.
    """
    import yaml

    from agents.search import SearchConfig
    from amc.compress import apply_policy
    from amc.data import get_dataset
    from amc.training import evaluate, load_checkpoint

    if run.policy is None:
        return None
    cache = {} if cache is None else cache
    cfg = SearchConfig.from_dict(yaml.safe_load((run.run_dir / "config.yaml").read_text()),
                                 source=str(run.run_dir / "config.yaml"))
    ckpt = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else run.run_dir / "pretrain" / "final.pt"
    dkey = ("data", cfg.dataset, cfg.data_dir, cfg.val_size, cfg.data_seed)
    if dkey not in cache:
        cache[dkey] = get_dataset(cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size,
                                  seed=cfg.data_seed)
    mkey = ("model", str(ckpt.resolve()))
    if mkey not in cache:
        cache[mkey] = load_checkpoint(ckpt, device=device)[0].eval()
    splits, model = cache[dkey], cache[mkey]
    x, y = splits.tensors(split, device=device)
    # built with autograd on (tracing the dependency graph needs it); evaluate runs without
    compressed = apply_policy(model, run.policy, splits=splits, device=device, example_input=x[:1], check=False)
    return float(evaluate(compressed, (x, y), device=device))


# --------------------------------------------------------------------------------------------------
# the figures


def plot_curves(runs: Sequence[RunResult]) -> Any:
    """Best-so-far accuracy vs evaluations per agent and budget (mean line, +-1 std band over runs).

    Groups with few evaluations (uniform, presets) are drawn as a dashed level across the axis."""
    from matplotlib.figure import Figure

    ax = Figure(figsize=(7.5, 4.5), layout="constrained").subplots()
    single = [r for r in runs if not r.multi_objective and r.rows]
    groups = _by_key(single)
    x_max = max((len(r.rows) for r in single), default=1)
    for color, ((agent, target), rs) in zip(_colors(len(groups)), groups.items()):
        n = max(len(r.rows) for r in rs)
        # a finished run keeps its best
        curves = np.array([np.pad(best_so_far(r.rows), (0, n - len(r.rows)), mode="edge") for r in rs])
        mean = np.nanmean(curves, axis=0)
        label = f"{agent} ({target})" if len({t for _, t in groups}) > 1 else agent
        if len(rs) > 1:
            label += f", {len(rs)} runs"
        if n < max(10, 0.2 * x_max):  # uniform / presets: their result as a level, marked at its cost in evaluations
            evals = float(np.mean([r.evaluations for r in rs]))
            ax.axhline(mean[-1], color=color, ls="--", lw=1.2, label=f"{label} ({evals:.0f} evaluations)")
            ax.plot([evals], [mean[-1]], color=color, marker="D", ms=6, mec="k", mew=0.5)
            continue
        xs = np.arange(1, n + 1)
        ax.plot(xs, mean, color=color, lw=1.6, label=label)
        if len(rs) > 1:
            std = np.nanstd(curves, axis=0, ddof=1)
            ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.18, lw=0)
    base = [r.base_accuracy for r in single if r.base_accuracy is not None]
    if base:
        ax.axhline(float(np.mean(base)), color="gray", ls=":", lw=1, label="uncompressed")
    ax.set(xlabel="evaluations (env episodes)", ylabel="best-so-far val top-1 (%)")
    ax.set_title("search progress (mean, ±1 std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    # the interesting range: from where the curves are after the first 5 % of the evaluations
    k = max(1, int(0.05 * x_max))
    lo = np.nanmin([best_so_far(r.rows)[min(k, len(r.rows)) - 1] for r in single]) if single else 0.0
    hi = max(base + [np.nanmax(best_so_far(r.rows)) for r in single]) if single else 100.0
    if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.legend(fontsize=8, loc="lower right")
    return ax.figure


def plot_pareto(runs: Sequence[RunResult]) -> Any | None:
    """Accuracy vs the cost ratio: each multi-objective run's trials and front, the single-objective
    results marked (None without a multi-objective run)."""
    mo = [r for r in runs if r.multi_objective]
    if not mo:
        return None
    from matplotlib.figure import Figure

    ax = Figure(figsize=(7.5, 4.8), layout="constrained").subplots()
    metric = str(mo[0].pareto.get("metric") or "macs_ratio")  # type: ignore[union-attr]
    colors = _colors(len(mo) + 8)
    for color, r in zip(colors, mo):
        p = r.pareto or {}
        if p.get("metric", metric) != metric:
            logger.warning("%s: front in %s, not %s; left out of the plot", r.run_dir, p.get("metric"), metric)
            continue
        pts = np.array([[t[metric], t["accuracy"]] for t in p.get("trials") or []], dtype=np.float64)
        front = np.array([[t[metric], t["accuracy"]] for t in p.get("front") or []], dtype=np.float64)
        name = f"{r.agent} s{r.seed}" if r.seed is not None else r.agent
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], s=8, color=color, alpha=0.25, lw=0, label=f"{name}: all trials")
        if len(front):
            order = np.argsort(front[:, 0])
            ax.step(front[order, 0], front[order, 1], where="post", color=color, lw=1.6)
            ax.scatter(front[:, 0], front[:, 1], s=22, color=color, edgecolor="k", lw=0.4, zorder=3,
                       label=f"{name}: Pareto front ({len(front)})")
    markers = "o^sDvP*Xh"
    so = [r for r in runs if not r.multi_objective and r.best_accuracy is not None and metric in r.achieved]
    for i, (agent, rs) in enumerate(_by_key(so, lambda r: r.agent).items()):
        ax.scatter([r.achieved[metric] for r in rs], [r.best_accuracy for r in rs], s=55,
                   marker=markers[i % len(markers)], color=colors[(len(mo) + i) % len(colors)], edgecolor="k",
                   lw=0.6, zorder=4, label=f"{agent} (budget {rs[0].target})")
    # the single-objective budgets in this metric
    for t in sorted({float(t.split("=", 1)[1]) for r in so for t in [r.target or ""]
                     if "=" in t and t.split("=", 1)[0] + "_ratio" == metric}):
        ax.axvline(t, color="gray", ls="--", lw=0.8)
    ax.set(xlabel=metric.replace("_", " ") + " (of the uncompressed model)", ylabel="val top-1 (%)")
    ax.set_title("accuracy vs cost: multi-objective front and single-objective results", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return ax.figure


def plot_policies(runs: Sequence[RunResult]) -> Any | None:
    """The best policy of each single-objective agent and budget, side by side per layer."""
    best = {k: max(rs, key=lambda r: r.best_reward or -math.inf)
            for k, rs in _by_key(r for r in runs if not r.multi_objective and r.policy is not None).items()}
    if not best:
        return None
    ref = next(iter(best.values())).policy
    same = {k: r for k, r in best.items()
            if [g.layers for g in r.policy.groups] == [g.layers for g in ref.groups]
            and [ly.name for ly in r.policy.layers] == [ly.name for ly in ref.layers]}
    if len(same) < len(best):
        logger.warning("policies of other models/modes left out of the policy plot: %s",
                       ", ".join(f"{a} ({t})" for a, t in best if (a, t) not in same))
    from matplotlib.figure import Figure

    panels = (["keep"] if ref.groups else []) + (["bits"] if any(r.policy.has_bits for r in same.values()) else [])
    if not panels:
        return None
    n_max = max(len(ref.groups), len(ref.layers))
    fig = Figure(figsize=(min(5.0 + 0.5 * n_max * max(1, len(same)) / 3, 22.0), 3.4 * len(panels)),
                 layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    colors = _colors(len(same))
    width = 0.8 / max(1, len(same))
    labels = {k: f"{k[0]} ({k[1]})" if len({t for _, t in same}) > 1 else k[0] for k in same}
    for ax, panel in zip(axes, panels):
        keep = panel == "keep"
        names = ([g.layers[0] + (f" (+{len(g.layers) - 1})" if len(g.layers) > 1 else "") for g in ref.groups]
                 if keep else [ly.name for ly in ref.layers])
        for j, (k, r) in enumerate(same.items()):
            acc = "-" if r.best_accuracy is None else f"{r.best_accuracy:.2f}%"
            pol = r.policy
            ax.bar(np.arange(len(names)) + (j - (len(same) - 1) / 2) * width,
                   [g.keep_ratio for g in pol.groups] if keep else [ly.w_bits or 32 for ly in pol.layers],
                   width=width, color=colors[j], label=f"{labels[k]}: {acc}" if keep else labels[k])
        ax.set_ylabel("keep ratio" if keep else "weight bits")
        if keep:
            ax.set_ylim(0, 1.15)
        ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.legend(fontsize=7, ncols=min(3, len(same)))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("best policy per agent", fontsize=10)
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


# --------------------------------------------------------------------------------------------------
# all together


def compare_runs(run_dirs: Sequence[str | os.PathLike], *, out_dir: str | os.PathLike,
                 tensorboard: bool = True, test: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Compare the runs in ``run_dirs`` (see :func:`find_runs`) and write the report into ``out_dir``.

    :param test: also measure each best policy's top-1 on the test split (:func:`policy_accuracy`;
        loads each run's data and model).

    Returns what ``compare.json`` holds: ``runs``, ``groups`` (mean/std per agent and budget),
    ``figures`` (name -> PNG path) and ``markdown`` (the path of ``compare.md``).
    """
    dirs = find_runs(run_dirs)
    if not dirs:
        raise AmcError("no search runs to compare: pass run directories that hold a summary.json")
    runs = [load_run(d) for d in dirs]
    if test:
        cache: dict[Any, Any] = {}
        for r in runs:
            if not r.multi_objective:
                r.test_accuracy = policy_accuracy(r, split="test", device=device, cache=cache)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {name: fig for name, make in (("curves", plot_curves), ("pareto", plot_pareto),
                                            ("policies", plot_policies)) if (fig := make(runs)) is not None}
    paths: dict[str, str] = {}
    for name, fig in figures.items():
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110)
        paths[name] = str(atomic_write_bytes(out / f"{name}.png", png.getvalue()))
    result: dict[str, Any] = {
        "format": "amc-compare", "version": 1,
        "runs": [r.to_dict() for r in runs],
        "groups": group_runs(runs),
        "figures": paths,
        "markdown": str(out / "compare.md"),
    }
    md = markdown_table(result)
    atomic_write_text(out / "compare.md", md)
    atomic_write_json(out / "compare.json", result)
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(out / "tb")) as writer:
            for name, fig in figures.items():
                writer.add_figure(f"compare/{name}", fig, global_step=0, close=True)
            writer.add_text("compare/table", md, global_step=0)
    logger.info("compared %d runs (%d groups) -> %s", len(runs), len(result["groups"]), out)
    return result
