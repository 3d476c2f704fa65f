"""The sensitivity-and-solver agent (``--agent sensitivity``): a per-decision table, then an exact knapsack.

The family used by the maintained toolkits (AIMET's per-layer score table, ModelOpt's AutoQuantize,
HAWQ-V3's integer program), on the very same env, proxy and reward as the other agents.

**1. Sensitivity table.** One episode with every decision at its uncompressed value (action 1.0:
keep ratio 1, the largest bit width) gives the base reward ``R0``. Then, for each decision ``i`` and
each choice ``j`` of its grid, one episode with only decision ``i`` at choice ``j`` and every other
decision at 1.0 gives ``R_ij``; the score is ``R_ij - R0`` (e.g. the accuracy drop / 100 for the
``acc`` reward). The grid is ``grid`` keep-ratio actions evenly spaced over [0, 1] (keep ratios
lbound..1) for prune / sparsity decisions and every bit width of the space for bit decisions.

*Probing without the budget clip.* With the real budget, the env would clip the later decisions of a
probe (AMC's rule keeps the target reachable; HAQ's lowers bits), so a probe would not be "one
decision changed". Probes therefore run inside ``CompressionEnv.unbudgeted()``: the same env object
(same model, proxy, calibration images, quantisation caches and reward), with the target cost
lifted to infinity and no budget band for the probe episodes only.

The table is written to ``run_dir/sensitivity.csv`` after every probe; a resumed run reads it and
only evaluates the probes that are missing (none once it is complete). ``sensitivity.png`` is the
heat map (decisions x choices, the chosen cell outlined).

**2. Solver.** One choice per decision maximising the summed score under the budget: a
multiple-choice knapsack solved exactly by :func:`solve_mckp` (``scipy.optimize.milp``, HiGHS, gap
0). Each choice's cost is its *marginal* cost from the env's cost model: cost of the policy with only
that decision changed minus the cost of the all-1.0 policy, in units of the uncompressed cost. A choice
that costs no less than a wider choice of the same decision (activation bits under ``size=``, which
prices weights only) is never taken: its score differs from the wider one's by noise only.

*The non-additive budget.* MACs of a layer depend on its input and its output channel group
(``q_in q_out``), and BitOps on bits times channels, so the marginal costs are an additive
approximation that underestimates the real cost (``q_in q_out >= q_in + q_out - 1``). The agent
repairs this on the exact cost model, without evaluations: it bisects the knapsack's capacity
(``repair_steps`` MILPs) for the largest capacity whose solution meets the budget under
``CompressionEnv.cost_of`` (the exact cost of the policy). That policy is then run as an ordinary
episode with the real budget, so the env's clip guarantees the budget in any case; ``summary``
says whether the env had to change anything (``clipped``, normally false).

**Outputs.** Like :mod:`agents.uniform`, the solved policy is the run's only episode (phase
``solver``): the probes are evaluations (``summary["evaluations"]``), not candidates, so they never
become the run's best. ``episodes`` is not a cap: the table needs ``1 + sum(choices - 1)``
evaluations (the choice at action 1.0 is the base episode itself) plus one for the policy.

*Probing around the uniform policy* (``around="uniform"``). Around float, a bit-width probe changes
one layer while every other layer stays at its widest bits, where one 3-bit layer barely moves the
score; the additive table then underrates low widths, and the knapsack buys many of them (ResNet-20
at ``bitops=W4A4``: README, "Mixed precision"). With ``around="uniform"`` every probe starts from
the uniform policy at the budget (:func:`agents.uniform.uniform_actions`: uniform bits with every
channel kept when bits alone meet the budget, else channels and bits scaled together) and changes one
decision from there; scores and marginal costs are taken against that policy's episode, which is a
choice of every decision (score 0, cost 0), so the knapsack can always keep it. The table's base
row records which start it was made from (``value`` = ``base`` or ``uniform``); a resumed run with the
other start refuses the table.

``agent_kwargs``: ``grid`` (keep-ratio points per prune decision, >= 2, default 5),
``repair_steps`` (bisection steps of the capacity, default 30), ``around`` (``float``, the default,
or ``uniform``: the policy every probe starts from).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from agents._base import AGENTS, Agent, applied_unchanged
from agents._recorder import write_csv
from agents.uniform import uniform_actions
from amc.budget import bisect
from amc.config.agents import AgentKwargs
from amc.config.train import Count
from amc.errors import AmcError

__all__ = ["SensitivityAgent", "solve_mckp", "TABLE_COLUMNS"]

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ("decision", "kind", "layer", "choice", "action", "value", "cost", "accuracy", "reward", "score")
_TABLE, _HEATMAP = "sensitivity.csv", "sensitivity.png"


def solve_mckp(scores: Sequence[Sequence[float]], costs: Sequence[Sequence[float]], capacity: float
               ) -> tuple[list[int], float]:
    """Multiple-choice knapsack, solved exactly: one choice ``j`` per group ``i`` maximising
    ``sum scores[i][j]`` subject to ``sum costs[i][j] <= capacity``. Returns (choices, total score).

    ``scipy.optimize.milp`` (HiGHS branch and bound, relative gap 0) on binary ``x_ij`` with
    ``sum_j x_ij = 1`` per group. Raises ``AmcError`` when no selection fits ``capacity``.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    if len(scores) != len(costs) or not scores:
        raise AmcError("solve_mckp needs one score list and one cost list per group (at least one group)")
    sizes = [len(s) for s in scores]
    if any(n < 1 for n in sizes) or sizes != [len(c) for c in costs]:
        raise AmcError("solve_mckp: every group needs at least one choice, with as many costs as scores")
    s = np.concatenate([np.asarray(x, dtype=np.float64) for x in scores])
    c = np.concatenate([np.asarray(x, dtype=np.float64) for x in costs])
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(c)) and math.isfinite(capacity)):
        raise AmcError("solve_mckp: scores, costs and capacity must be finite")
    lightest = sum(float(np.min(x)) for x in costs)
    tol = 1e-9 * max(1.0, abs(capacity))
    if lightest > capacity + tol:
        raise AmcError(f"the budget cannot be met: even the cheapest choice of every decision costs {lightest:.6g} "
                       f"> capacity {capacity:.6g}")
    n = len(s)
    one = np.repeat(np.eye(len(sizes)), sizes, axis=1)  # row i: the choices of group i
    offsets = np.cumsum([0] + sizes[:-1])
    limit = capacity + tol
    for k in range(40):  # HiGHS accepts rows violated within its feasibility tolerance (~1e-7): tighten, re-solve
        cons = [LinearConstraint(one, 1.0, 1.0), LinearConstraint(c[None, :], -np.inf, limit)]
        res = milp(-s, constraints=cons, integrality=np.ones(n), bounds=Bounds(0.0, 1.0),
                   options={"mip_rel_gap": 0.0})
        if res.x is None or res.status != 0:
            raise AmcError(f"the knapsack solver found no selection within capacity {capacity:.6g}: {res.message}")
        choices = [int(np.argmax(res.x[o:o + k])) for o, k in zip(offsets, sizes)]
        chosen = [int(o) + j for o, j in zip(offsets, choices)]
        excess = float(c[chosen].sum()) - (capacity + tol)
        if excess <= 0:
            break
        limit -= (excess + tol) * 2.0 ** k
    else:
        raise AmcError("internal: the knapsack solution kept exceeding its capacity (solver tolerance)")
    return choices, float(s[chosen].sum())


def _undominated(scores: list[list[float]], costs: list[list[float]]) -> list[list[float]]:
    """The solver's scores: a choice that costs no less than a wider choice of the same decision is never
    taken. Its score differs from the wider one's by noise only (activation bits under a ``size=`` budget
    all cost 0, and the most aggressive would win on a lucky probe); it gets a score below every other."""
    floor = min(min(s) for s in scores) - 1.0
    # choices run from the most aggressive to the widest
    return [[floor if j + 1 < len(c) and c[j] >= min(c[j + 1:]) - 1e-12 else s[j] for j in range(len(s))]
            for s, c in zip(scores, costs)]


class SensitivityOptions(AgentKwargs):
    """The sensitivity agent's ``agent_kwargs``."""

    grid: Count = Field(5, ge=2, description="keep-ratio points per prune decision, from lbound to 1")
    repair_steps: Count = Field(30, ge=0, description="bisection steps of the budget repair")
    around: Literal["float", "uniform"] = Field(
        "float", description="the policy each probe changes one decision of: every decision uncompressed (float), "
                             "or the uniform policy at the budget (uniform)")


class SensitivityAgent(Agent):
    """Sensitivity table + exact multiple-choice knapsack (see the module docstring)."""

    name = "sensitivity"
    options = SensitivityOptions

    def __init__(self, env: Any, config: Any, recorder: Any) -> None:
        super().__init__(env, config, recorder)
        base = env.unwrapped
        for attr in ("cost_of", "unbudgeted", "decisions", "spaces", "base_cost", "target_cost"):
            if not hasattr(base, attr):
                raise AmcError(f"the sensitivity agent needs an amc CompressionEnv (the env has no {attr!r})")
        self.base = base
        self.decisions = list(base.decisions)
        self.n_decisions = len(self.decisions)
        self.probes_run = 0
        self.table: dict[tuple[int, int], dict[str, Any]] = {}  # (decision, choice) -> row; decision -1: base
        self.chosen: list[int] | None = None
        self.solver: dict[str, Any] = {}
        self.clipped: bool | None = None
        self.table_path = Path(recorder.run_dir) / _TABLE
        # the probes' starting policy: its actions, and per decision the index of its choice in the grid
        if self.params.around == "uniform":
            self.start, self.start_label = [float(a) for a in uniform_actions(env)], "uniform"
        else:
            self.start, self.start_label = [1.0] * self.n_decisions, "base"
        self._choices, self.start_choice = map(list, zip(*(self._grid(i) for i in range(self.n_decisions))))

    # ----------------------------------------------------------------- the grid
    def choices(self, i: int) -> list[tuple[float, Any]]:
        """(action, value) of decision ``i``'s choices, most aggressive first, the last at action 1.0; with
        ``around="uniform"`` the start's own choice is among them (inserted when it is off the grid)."""
        return self._choices[i]

    def _grid(self, i: int) -> tuple[list[tuple[float, Any]], int]:
        """Decision ``i``'s choices and the index of the start's own (inserted when off the grid)."""
        d = self.decisions[i]
        space = self.base.spaces[d.kind]
        start = float(space.to_value(self.start[i]))
        if d.kind in ("w_bits", "a_bits"):
            grid = [(1.0 if b == space.b_max else space.to_action(b), b) for b in range(space.b_min, space.b_max + 1)]
        else:
            grid = [(float(a), float(space.to_value(float(a)))) for a in np.linspace(0.0, 1.0, self.params.grid)]
            if all(abs(v - start) > 1e-9 for _, v in grid):
                grid = sorted(grid + [(self.start[i], start)])
        return grid, next(j for j, (_, v) in enumerate(grid) if abs(float(v) - start) <= 1e-9)

    # ----------------------------------------------------------------- episodes
    def _load_table(self) -> None:
        self.table = {}
        if not self.table_path.is_file():
            return
        with self.table_path.open(newline="") as f:
            for r in csv.DictReader(f):
                i, j = int(r["decision"]), int(r["choice"])
                kind = self.decisions[i].kind if 0 <= i < self.n_decisions else "base"
                ok = (r["value"] == self.start_label if i == -1 else
                      i < self.n_decisions and j < len(self.choices(i)) and j != self.start_choice[i]
                      and abs(float(r["action"]) - self.choices(i)[j][0]) < 1e-9)
                if r["kind"] != kind or not ok:
                    raise AmcError(f"{self.table_path} was made for other decisions, another grid or another "
                                   f"start (row {r}); remove it or start the run with --overwrite")
                self.table[(i, j)] = {k: r[k] for k in TABLE_COLUMNS}
        logger.info("sensitivity: %d probe(s) read from %s", len(self.table), self.table_path)

    def _write_table(self) -> None:
        write_csv(self.table_path, TABLE_COLUMNS, [self.table[key] for key in sorted(self.table)])

    def _probe(self, i: int, j: int, action: float, value: Any) -> None:
        actions = [action if k == i else a for k, a in enumerate(self.start)]  # i = -1: the start's episode
        with self.base.unbudgeted():
            info = self._episode(actions)
        self.probes_run += 1
        m = info["metrics"]
        kind = "base" if i < 0 else self.decisions[i].kind
        self.table[(i, j)] = {"decision": i, "kind": kind, "layer": "" if i < 0 else self.decisions[i].layer,
                              "choice": j, "action": action, "value": value,
                              "cost": self.base.cost_of(actions) / self.base.base_cost,
                              "accuracy": m.get("accuracy"), "reward": m["reward"], "score": None}
        self._write_table()

    def build_table(self) -> bool:
        """Evaluate the missing probes; True when the table is complete."""
        self._load_table()
        if (-1, 0) not in self.table and not self.stop_requested:
            self._probe(-1, 0, 1.0, self.start_label)
        for i in range(self.n_decisions):
            for j, (a, v) in enumerate(self.choices(i)):
                if j == self.start_choice[i]:  # the start's own choice is the base episode
                    continue
                if self.stop_requested:
                    return False
                if (i, j) not in self.table:
                    self._probe(i, j, a, v)
        return (-1, 0) in self.table

    def matrices(self) -> tuple[list[list[float]], list[list[float]], float]:
        """Per decision, per choice: score (reward - base reward) and marginal cost (fraction of the
        uncompressed cost); and the base (start) policy's cost. The start's own choices score 0, cost 0."""
        base = self.table[(-1, 0)]
        r0, c0 = float(base["reward"]), float(base["cost"])
        scores, costs = [], []
        for i in range(self.n_decisions):
            n, s = len(self.choices(i)), self.start_choice[i]
            scores.append([0.0 if j == s else float(self.table[(i, j)]["reward"]) - r0 for j in range(n)])
            costs.append([0.0 if j == s else float(self.table[(i, j)]["cost"]) - c0 for j in range(n)])
        return scores, costs, c0

    # ----------------------------------------------------------------- solving
    def solve(self) -> list[float]:
        """The knapsack's choice, repaired on the exact cost model (module docstring); returns actions."""
        scores, costs, c0 = self.matrices()
        scores = _undominated(scores, costs)
        target = self.base.target_cost / self.base.base_cost
        lo = sum(min(c) for c in costs)
        hi = target - c0

        def actions_of(ch: list[int]) -> list[float]:
            return [self.choices(i)[j][0] for i, j in enumerate(ch)]

        def exact(ch: list[int]) -> float:
            return self.base.cost_of(actions_of(ch)) / self.base.base_cost

        best: tuple[list[int], float, float] | None = None  # choices, score, capacity
        if exact(self.start_choice) <= target + 1e-12:  # the start (uniform) meets the budget: it is a candidate
            best = (list(self.start_choice), 0.0, 0.0)

        def feasible(capacity: float) -> bool:  # the knapsack's choice at this capacity meets the exact budget
            nonlocal best
            ch, total = solve_mckp(scores, costs, capacity)  # AmcError when even the additive problem is infeasible
            if exact(ch) > target + 1e-12:
                return False
            if best is None or total > best[1]:
                best = (ch, total, capacity)
            return True

        steps = 0
        if not feasible(hi):
            bisect(feasible, lo, hi, steps=self.params.repair_steps)
            steps = self.params.repair_steps
        if best is None:  # every decision at its most aggressive choice always fits (the env checked)
            ch = [0] * self.n_decisions
            best = (ch, sum(s[0] for s in scores), lo)
            logger.warning("sensitivity: no knapsack solution met the exact budget after %d repair steps; using the "
                           "most aggressive choice everywhere", steps)
        ch, total, cap = best
        self.chosen = ch
        self.solver = {"score": total, "capacity": cap + c0, "additive_capacity": target, "repair_steps": steps,
                       "exact_cost_ratio": exact(ch), "target_ratio": target}
        return actions_of(ch)

    # ----------------------------------------------------------------- outputs
    def heatmap(self) -> Any:
        """The table as a matplotlib ``Figure``: decisions x choices, colour = score, chosen cells outlined."""
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        scores, _, _ = self.matrices()
        width = max(len(s) for s in scores)
        mat = np.full((self.n_decisions, width), np.nan)
        for i, s in enumerate(scores):
            mat[i, :len(s)] = s
        names = [ly.name for ly in self.base.graph.layers] if hasattr(self.base, "graph") else None
        fig = Figure(figsize=(1.6 + 0.75 * width, 1.2 + 0.38 * self.n_decisions), layout="constrained")
        ax = fig.add_subplot()
        im = ax.imshow(mat, cmap="viridis", aspect="auto")
        for i in range(self.n_decisions):
            for j, (_, v) in enumerate(self.choices(i)):
                label = f"{v}b" if isinstance(v, int) else f"{v:.2f}"
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white")
            if self.chosen is not None:
                ax.add_patch(Rectangle((self.chosen[i] - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        ax.set_yticks(range(self.n_decisions))
        ax.set_yticklabels([f"{i} {d.kind} {names[d.layer] if names else d.layer}"
                            for i, d in enumerate(self.decisions)], fontsize=7)
        ax.set_xticks(range(width))
        ax.set_xlabel("choice (most aggressive first; cell text: keep ratio or bits)")
        ax.set_title("sensitivity: reward - base reward (red: chosen)", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
        return fig

    # ----------------------------------------------------------------- the loop
    def run(self, episodes: int) -> None:
        if self.recorder.episode:  # the policy is recomputed from the (cached) table
            self.recorder.restore(None)
        self.interrupted = False
        if not self.build_table():
            self.interrupted = True
            logger.warning("sensitivity: stopped after %d probe(s); --resume continues the table", self.probes_run)
            return
        actions = self.solve()
        info = self._episode(actions)
        self.clipped = not applied_unchanged(self.env, actions, info)
        if self.clipped:
            logger.warning("sensitivity: the env clipped the solver's policy to meet the budget")
        self.recorder.record_episode(info, phase="solver")
        for row in self.table.values():  # scores for the CSV, now that the base reward is known
            row["score"] = float(row["reward"]) - float(self.table[(-1, 0)]["reward"])
        self._write_table()
        self.recorder.write_figure(self.heatmap(), _HEATMAP, tag="search/sensitivity",
                                   step=max(1, self.recorder.episode), dpi=110)
        logger.info("sensitivity: %d evaluation(s) (%d probe(s) run, %d reused), accuracy %.2f%%", self.evaluations,
                    self.probes_run, len(self.table) - self.probes_run, info["metrics"].get("accuracy") or math.nan)

    def summary_extra(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations, "probes_run": self.probes_run, "table_rows": len(self.table),
                "grid": self.params.grid, "around": self.params.around, "choices": self.chosen, "clipped": self.clipped,
                "solver": self.solver, "sensitivity_table": str(self.table_path)}


AGENTS.register("sensitivity", SensitivityAgent)
