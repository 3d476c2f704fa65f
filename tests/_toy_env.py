"""A tiny stand-in for ``envs.CompressionEnv`` with the same contract (docs/INTERNALS.md), for agent tests.

Each of ``n`` layers has a MACs cost ``c_i`` and a (hidden) sensitivity ``s_i``. An action ``a`` in
[0, 1] becomes the keep ratio ``k = lbound + a * (1 - lbound)``, capped by AMC's budget rule so that
every episode meets ``sum(c_i k_i) <= target * sum(c_i)``. The accuracy is

    acc = base - 40 * sum_i w_i (1 - k_i)^2 + eps,     w = s / sum(s),  eps ~ N(0, noise^2) per episode

and the reward ``acc * 0.01`` (AMC's ``acc`` reward) arrives at the last step. The best allocation
under the budget is known in closed form (water-filling, :meth:`optimal_keep`) and is non-uniform.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np

from amc.policy import GroupDecision, LayerDecision, Policy
from envs.compression import Decision
from search_spaces import KeepRatioSpace

CHANNELS = 16


class ToyCompressionEnv(gym.Env):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        *,
        costs: tuple[float, ...] = (4.0, 8.0, 8.0, 4.0, 2.0, 1.0),
        sensitivities: tuple[float, ...] = (8.0, 1.0, 4.0, 0.5, 6.0, 2.0),
        target: float = 0.5,
        lbound: float = 0.2,
        base_accuracy: float = 95.0,
        noise: float = 0.05,
    ) -> None:
        super().__init__()
        self.costs = np.asarray(costs, dtype=np.float64)
        self.sens = np.asarray(sensitivities, dtype=np.float64)
        self.weights = self.sens / self.sens.sum()
        self.params = self.costs[::-1].copy()  # a different cost profile for params_ratio
        self.target, self.lbound, self.noise = float(target), float(lbound), float(noise)
        self.base_accuracy = float(base_accuracy)
        self.n_decisions = len(self.costs)
        self.decision_kinds = ["prune"] * self.n_decisions
        self.decisions = [Decision("prune", i, i) for i in range(self.n_decisions)]
        self.spaces = {"prune": KeepRatioSpace(lbound=self.lbound)}
        self.base_cost = float(self.costs.sum())
        self.observation_space = gym.spaces.Box(0.0, 1.0, (5,), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self._t = 0
        self._keep: list[float] = []
        self._actions: list[float] = []
        self._eps = 0.0

    # ----------------------------------------------------------------- model of the problem
    def accuracy(self, keep: np.ndarray) -> float:
        return float(self.base_accuracy - 40.0 * np.sum(self.weights * (1.0 - np.asarray(keep)) ** 2))

    def optimal_keep(self) -> np.ndarray:
        """argmin sum w_i (1 - k_i)^2 s.t. sum c_i k_i = target * sum c_i, lbound <= k_i <= 1."""
        budget = self.target * self.costs.sum()

        def keep(lam: float) -> np.ndarray:
            return np.clip(1.0 - lam * self.costs / (2.0 * self.weights), self.lbound, 1.0)

        lo, hi = 0.0, 1e6
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if (keep(mid) * self.costs).sum() > budget else (lo, mid)
        return keep(hi)

    def optimal_actions(self) -> np.ndarray:
        return (self.optimal_keep() - self.lbound) / (1.0 - self.lbound)

    # ----------------------------------------------------------------- cost model (CompressionEnv's helpers)
    @property
    def target_cost(self) -> float:
        return self.target * self.base_cost

    def cost_of(self, actions: Sequence[float]) -> float:
        keep = self.lbound + np.clip(np.asarray(actions, dtype=np.float64), 0.0, 1.0) * (1.0 - self.lbound)
        return float((self.costs * keep).sum())

    @contextmanager
    def unbudgeted(self) -> Iterator[None]:
        target, self.target = self.target, math.inf
        try:
            yield
        finally:
            self.target = target

    # ----------------------------------------------------------------- gymnasium API
    def _obs(self) -> np.ndarray:
        t = min(self._t, self.n_decisions - 1)
        total = self.costs.sum()
        reduced = sum(c * (1 - k) for c, k in zip(self.costs, self._keep)) / total
        rest = self.costs[t + 1:].sum() / total
        prev = self._actions[-1] if self._actions else 0.0
        return np.array([t / (self.n_decisions - 1), self.costs[t] / self.costs.max(), reduced, rest, prev],
                        dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t, self._keep, self._actions = 0, [], []
        self._eps = float(self.np_random.normal(0.0, self.noise)) if self.noise > 0 else 0.0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))
        t = self._t
        spent = sum(c * k for c, k in zip(self.costs, self._keep))
        rest_min = self.lbound * self.costs[t + 1:].sum()
        k_max = (self.target * self.costs.sum() - spent - rest_min) / self.costs[t]
        k = min(self.lbound + a * (1.0 - self.lbound), max(k_max, self.lbound))
        a = (k - self.lbound) / (1.0 - self.lbound)
        self._keep.append(k)
        self._actions.append(a)
        self._t += 1
        if self._t < self.n_decisions:
            return self._obs(), 0.0, False, False, {}
        keep = np.array(self._keep)
        acc = self.accuracy(keep) + self._eps
        reward = acc * 0.01
        macs_ratio = float((self.costs * keep).sum() / self.costs.sum())
        params_ratio = float((self.params * keep).sum() / self.params.sum())
        info = {
            "policy": self._policy(keep, macs_ratio, params_ratio),
            "metrics": {"accuracy": acc, "reward": reward, "macs_ratio": macs_ratio, "params_ratio": params_ratio},
            "actions": list(self._actions),
            "timing": {"prune": 0.0, "reconstruct": 0.0, "evaluate": 0.0},
        }
        return self._obs(), float(reward), True, False, info

    def _policy(self, keep: np.ndarray, macs_ratio: float, params_ratio: float) -> Policy:
        groups = [GroupDecision(layers=[f"layer{i}"], keep_ratio=float(k), channels=max(1, round(k * CHANNELS)),
                                total=CHANNELS) for i, k in enumerate(keep)]
        layers = [LayerDecision(name=f"layer{i}", kind="conv") for i in range(self.n_decisions)]
        return Policy(model={"name": "toy", "num_classes": 10, "in_channels": 1, "image_size": [8, 8]},
                      mode="prune", budget={"metric": "macs", "ratio": self.target},
                      pruning={"importance": "l1", "round_to": 1}, groups=groups,
                      layers=layers, achieved={"macs_ratio": macs_ratio, "params_ratio": params_ratio})
