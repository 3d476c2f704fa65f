"""Uniform and hand-crafted baselines: one scaled action profile, bisected to the budget.

``uniform`` gives every decision the same action ``a`` in [0, 1]: the same keep ratio
``lbound + a (1 - lbound)`` for every prunable group and/or the same bit width for every quantized
layer (in ``joint`` mode one ``a`` sets both, so both shrink together). The agent looks for the
largest ``a`` whose policy meets the budget *as it is*, i.e. that the env does not have to clip:
for prune mode the largest uniform ratio ``r`` with ``cost(r, ..., r) <= target``. This is the one
uniform baseline: :func:`amc.transfer.uniform_policy` finds the same prune policy without data, on
the cost model, over the same grid (the bisection and the grid are :mod:`amc.budget`'s).

``preset:<name>`` does the same with a hand-crafted profile ``w`` (one weight per decision): action
``a_i = min(1, s w_i)`` and the largest feasible scale ``s`` is searched.

==============  ===============================================================================
profile         weights ``w_i`` (``x_i = i / (n - 1)``, the decision's relative depth)
==============  ===============================================================================
``uniform``     ``1``
``deep``        ``1 - 0.5 x_i``: early layers keep more, deeper layers are pruned more (deep layers
                are wide and redundant, early ones are cheap and sensitive; AMC, He et al. 2018)
``ends``        ``4`` for the first and last decision (kept almost whole), ``1`` elsewhere
==============  ===============================================================================

**Bisection through the env.** Cost grows with every action, so feasibility is monotone in ``s``.
The agent lists the distinct policies along the path ``s = 0 .. s_max`` (channel counts after
rounding, bit widths; computed from the env's groups, no evaluation) and bisects over that list. A
probe is an ordinary env episode with the profile's actions: it is feasible when the env applied them
unchanged (no keep ratio clipped by AMC's rule, no bit width lowered by HAQ's). ``s = 0`` (every
decision at its most aggressive value) always is: the env refuses budgets it cannot reach. About
``log2(#policies)`` evaluations in all (``summary["evaluations"]``; ``summary["probes"]`` lists them
with their accuracies); ``episodes`` caps the bisection (plus one probe at ``s = 0`` if none was
feasible yet).

**One episode.** The result, the tightest feasible policy, is recorded as the run's only episode
(phase = the profile's name), so ``episodes.csv`` has one row however many probes were evaluated:
this agent solves for its policy instead of searching, and recording every probe would make the
recorder's best the most accurate probe, i.e. pick among ratios by their val accuracy. A resumed run
redoes the bisection (deterministic, a few evaluations).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from agents._base import AGENTS, Agent, applied_unchanged, env_decisions
from amc._registry import Registry
from amc.budget import bisect, limit, path_candidates
from amc.config.agents import AgentKwargs
from amc.config.train import Count
from amc.errors import AmcError

__all__ = ["UniformAgent", "PresetAgent", "PROFILES", "profile_weights", "uniform_actions"]

logger = logging.getLogger(__name__)

#: profile name -> ``f(n_decisions, decision_kinds) -> weights`` (positive, one per decision)
PROFILES: Registry[Callable[[int, Sequence[str]], np.ndarray]] = Registry("profile")


PROFILES.register("uniform", lambda n, kinds: np.ones(n))
PROFILES.register("deep", lambda n, kinds: 1.0 - 0.5 * np.linspace(0.0, 1.0, n))  # x_i: 0 for n = 1
PROFILES.register("ends", lambda n, kinds: np.where((np.arange(n) == 0) | (np.arange(n) == n - 1), 4.0, 1.0))


def profile_weights(name: str, n: int, kinds: Sequence[str]) -> np.ndarray:
    """The weights of profile ``name`` for ``n`` decisions (``ValueError`` for an unknown name)."""
    w = np.asarray(PROFILES.get(name)(n, list(kinds)), dtype=np.float64).reshape(-1)
    if w.shape != (n,) or not np.all(w > 0):
        raise AmcError(f"profile {name!r} must give {n} positive weights, got {w.tolist()}")
    return w


def uniform_actions(env: Any, *, iterations: int = 40) -> list[float]:
    """The uniform policy's actions at the env's budget, on the cost model alone (no evaluation).

    The largest equal action whose policy meets the budget (:meth:`CompressionEnv.cost_of` <= the
    target; cost grows with the action, so a bisection finds it). In ``joint`` mode bits go first:
    when uniform bits with every channel kept can meet the budget (``bitops=W4A4``, ``size=``), the
    channels stay whole and only the bits are scaled, which gives uniform W{b}A{b} itself; otherwise
    channels and bits shrink together, as the ``uniform`` agent does. A decision the budget does not
    price (activation bits under ``size=``, bits under ``macs=``) is then set to its widest value,
    since lowering it buys nothing: at ``size=W4A4`` this gives W4A8. DDPG's ``--warm-start uniform``
    and the sensitivity agent's ``around="uniform"`` start from it.
    """
    base = env.unwrapped
    if not hasattr(base, "cost_of"):
        raise AmcError("a uniform start needs an amc CompressionEnv (the env has no cost model)")
    kinds, _ = env_decisions(env)
    cap = limit(float(base.target_cost))
    prune = [k in ("prune", "sparsity") for k in kinds]
    bits_only = any(prune) and not all(prune) and base.cost_of([float(p) for p in prune]) <= cap

    def cost(scale: float) -> float:
        return base.cost_of([1.0 if bits_only and p else scale for p in prune])

    if cost(0.0) > cap:
        raise AmcError("the budget cannot be met even with every decision at its most aggressive value")
    if cost(1.0) <= cap:
        return [1.0] * len(prune)
    # the largest feasible scale sits on the upper edge of the tightest feasible policy; the scales that
    # give this policy start at ``edge``: take the middle, so rounding on the way through the agent keeps it
    top, _ = bisect(lambda s: cost(s) <= cap, 0.0, 1.0, steps=iterations)
    top_cost = cost(top)
    _, edge = bisect(lambda s: cost(s) != top_cost, 0.0, top, steps=iterations) if top > 0.0 else (0.0, 0.0)
    scale = 0.5 * (edge + top)
    return _widen_free(base, [1.0 if bits_only and p else scale for p in prune])


def _widen_free(base: Any, actions: list[float]) -> list[float]:
    """Each decision whose widest value leaves the policy's cost exactly as it is goes to 1.0."""
    actions = list(actions)
    current = base.cost_of(actions)
    for i, a in enumerate(actions):
        if a < 1.0 and base.cost_of(actions[:i] + [1.0] + actions[i + 1:]) == current:
            actions[i] = 1.0
    return actions


class UniformOptions(AgentKwargs):
    """The uniform and preset agents' ``agent_kwargs``."""

    grid: Count = Field(4096, ge=2, description="points of the scale path listed before deduplication")


class UniformAgent(Agent):
    """The uniform baseline (see the module docstring); ``PresetAgent`` subclasses swap the profile."""

    name = "uniform"
    profile: ClassVar[str] = "uniform"
    options = UniformOptions

    def __init__(self, env: Any, config: Any, recorder: Any) -> None:
        super().__init__(env, config, recorder)
        self.kinds, self.spaces = env_decisions(env)
        self.decisions = getattr(env.unwrapped, "decisions", None)
        self.weights = profile_weights(self.profile, len(self.kinds), self.kinds)
        self.probes: list[dict[str, Any]] = []
        self.scale: float | None = None
        self.converged = False
        self._best: tuple[float, dict[str, Any]] | None = None  # (scale, env info) of the largest feasible probe

    # ----------------------------------------------------------------- the path
    def actions_at(self, scale: float) -> list[float]:
        """The profile's actions at ``scale``: ``min(1, scale * w_i)``."""
        return [float(min(1.0, max(0.0, scale * w))) for w in self.weights]

    def _signature(self, actions: Sequence[float]) -> tuple[Any, ...]:
        """What the env will build from ``actions`` when it does not clip (channels, bits)."""
        from amc.cost import kept_channels

        base = self.env.unwrapped
        graph, cfg = getattr(base, "graph", None), getattr(base, "config", None)
        out: list[Any] = []
        for i, (kind, a) in enumerate(zip(self.kinds, actions)):
            value = self.spaces[kind].to_value(a)
            d = self.decisions[i] if self.decisions is not None else None
            if kind == "prune" and d is not None and graph is not None and getattr(d, "group", -1) >= 0:
                g = graph.groups[d.group]
                out.append(kept_channels(float(value), g.channels, g.slot_round_to(getattr(cfg, "round_to", 1))))
            elif kind in ("w_bits", "a_bits"):
                out.append(int(value))
            else:
                out.append(round(float(value), 5))
        return tuple(out)

    def candidates(self) -> list[float]:
        """Scales of the distinct policies along the path, cheapest first (each the smallest scale
        that gives its policy)."""
        return path_candidates(lambda s: self._signature(self.actions_at(s)), s_max=1.0 / float(self.weights.min()),
                               grid=self.params.grid)

    # ----------------------------------------------------------------- probes
    def _probe(self, scale: float) -> bool:
        actions = self.actions_at(scale)
        info = self._episode(actions)
        ok = applied_unchanged(self.env, actions, info)
        m = info["metrics"]
        self.probes.append({"scale": scale, "feasible": ok, "accuracy": m.get("accuracy"), "reward": m.get("reward")})
        if ok and (self._best is None or scale > self._best[0]):
            self._best = (scale, info)
        logger.debug("%s probe scale %.5f: %s, accuracy %.2f", self.name, scale, "feasible" if ok else "clipped",
                     m.get("accuracy") or float("nan"))
        return ok

    # ----------------------------------------------------------------- the loop
    def run(self, episodes: int) -> None:
        if self.recorder.episode:  # a bisection is cheap and deterministic: redo it
            logger.info("%s: redoing the bisection from the start", self.name)
            self.recorder.restore(None)
        cands = self.candidates()
        self._best = None
        self.interrupted = False
        # cands[0] is feasible (scale 0: every decision most aggressive); len(cands) a sentinel past the end
        lo, hi = bisect(lambda i: self._probe(cands[i]), 0, len(cands),
                        stop=lambda: self.evaluations >= episodes or self.stop_requested)
        self.converged = hi - lo == 1
        # always a result, even one past the cap
        if self._best is None and not self.stop_requested and not self._probe(cands[lo]):
            raise AmcError(f"{self.name}: even scale {cands[lo]:.4f} is clipped by the env; the budget "
                           "cannot be met by this profile")
        if self._best is not None:  # the tightest feasible policy found is the result: one episode
            self.scale = self._best[0]
            self.recorder.record_episode(self._best[1], phase=self.profile)
        self.interrupted = self.stop_requested and not self.converged
        if not self.converged and not self.stop_requested:
            logger.warning("%s: stopped after %d evaluations (episodes) before the bisection converged; the policy is "
                           "feasible but may not be the tightest", self.name, self.evaluations)
        logger.info("%s: scale %s after %d evaluations", self.name,
                    "-" if self.scale is None else f"{self.scale:.4f}", self.evaluations)

    def summary_extra(self) -> dict[str, Any]:
        return {
            "evaluations": self.evaluations,
            "profile": self.profile,
            "profile_weights": [round(float(w), 6) for w in self.weights],
            "scale": self.scale,
            "actions": None if self.scale is None else self.actions_at(self.scale),
            "converged": self.converged,
            "probes": self.probes,
        }


AGENTS.register("uniform", UniformAgent)


class PresetAgent(UniformAgent):
    """A hand-crafted profile scaled to the budget (``preset:<profile>``)."""

    profile = "deep"


for _prof in PROFILES.names():
    if _prof != "uniform":
        AGENTS.register(f"preset:{_prof}", type(
            f"Preset{_prof.title().replace('-', '').replace('_', '')}Agent", (PresetAgent,),
            {"name": f"preset:{_prof}", "profile": _prof, "__module__": __name__,
             "__doc__": f"Profile {_prof!r} scaled to the budget (see :mod:`agents.uniform`)."}))
