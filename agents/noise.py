"""AMC's exploration noise as a stable-baselines3 ``ActionNoise``.

AMC (He et al., ECCV 2018, and ``mit-han-lab/amc``) explores with a *truncated* normal around the
actor's action: ``a ~ N(mu(s), sigma^2)`` truncated to the action box, with ``sigma = 0.5`` in the
units of a ``[0, 1]`` action and decayed ``x0.95`` per episode after the warm-up; warm-up episodes
take uniform random actions and no noise at all.

SB3 adds ``action_noise()`` to the actor's action in its *normalised* ``[-1, 1]`` space and then clips
the sum to ``[-1, 1]``. Two consequences shape this class:

* ``unit_scale`` converts ``sigma`` from the env's action units to SB3's normalised units
  (``2 / (high - low)`` of the env's ``Box``; 2 for AMC's ``Box(0, 1)``), so that ``sigma`` reads as
  in the paper.
* ``__call__`` receives no mean. With ``mean_fn`` (a callable returning the actor's current action in
  normalised units, bound by the agent), the noise is drawn from ``N(0, sigma^2)`` truncated to
  ``[-1 - mu, 1 - mu]``, which is exactly AMC's truncated normal (SB3's clip is then a no-op).
  Without it the noise is truncated to ``+-2`` and SB3's clip does the rest.

The episode counter advances in :meth:`reset`, which SB3 calls when an episode ends. SB3 also calls
``reset()`` at the start of every ``learn()``; a reset that follows no draw is therefore not counted
as an episode, so the schedule is the same however ``learn()`` is chunked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri
from stable_baselines3.common.noise import ActionNoise

__all__ = ["TruncatedNormalNoise", "truncated_normal"]


def truncated_normal(
    rng: np.random.Generator, sigma: float, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Draw ``N(0, sigma^2)`` truncated to ``[low, high]`` elementwise (inverse-CDF sampling).

    ``low <= 0 <= high`` is expected (the mean lies inside the box), which keeps the inverse CDF away
    from the far tails where it loses precision. ``sigma == 0`` returns zeros.
    """
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    if sigma <= 0.0:
        return np.zeros(np.broadcast(low, high).shape)
    lo_cdf, hi_cdf = ndtr(low / sigma), ndtr(high / sigma)
    u = rng.uniform(size=np.broadcast(low, high).shape)
    x = sigma * ndtri(lo_cdf + u * (hi_cdf - lo_cdf))
    return np.clip(x, low, high)  # guard the last ulp of the inverse CDF


class TruncatedNormalNoise(ActionNoise):
    """Truncated normal exploration with AMC's warm-up and per-episode decay.

    :param action_dim: size of the action vector (1 for the compression env).
    :param sigma: initial standard deviation, in the env's action units (AMC: 0.5 for a [0, 1] action).
    :param decay: multiplicative decay per episode after the warm-up (AMC: 0.95, HAQ: 0.99).
    :param warmup: number of warm-up episodes with zero noise (their actions are uniform random).
    :param unit_scale: normalised units per env action unit (2 for ``Box(0, 1)`` under SB3).
    :param mean_fn: optional callable returning the current deterministic action in normalised units,
        shape ``(action_dim,)`` or ``(n_envs, action_dim)``; enables exact truncation to the box.
    :param seed: seed of the noise's own ``numpy.random.Generator``.
    """

    def __init__(
        self,
        action_dim: int = 1,
        *,
        sigma: float = 0.5,
        decay: float = 0.95,
        warmup: int = 0,
        unit_scale: float = 1.0,
        mean_fn: Callable[[], np.ndarray] | None = None,
        seed: int | None = None,
    ) -> None:
        if sigma < 0:
            raise ValueError(f"noise sigma must be >= 0, got {sigma}")
        if not (0.0 < decay <= 1.0):
            raise ValueError(f"noise decay must be in (0, 1], got {decay}")
        if warmup < 0:
            raise ValueError(f"noise warmup must be >= 0, got {warmup}")
        super().__init__()
        self.action_dim = int(action_dim)
        self.sigma0 = float(sigma)
        self.decay = float(decay)
        self.warmup = int(warmup)
        self.unit_scale = float(unit_scale)
        self.mean_fn = mean_fn
        self.episode = 0  # finished episodes
        self._draws = 0  # draws since the last reset
        self.rng = np.random.default_rng(seed)

    # ----------------------------------------------------------------- schedule
    @property
    def sigma(self) -> float:
        """Sigma of the current episode (env action units): 0 in warm-up, then ``sigma0 * decay^k``."""
        return 0.0 if self.in_warmup else self.sigma0 * self.decay ** (self.episode - self.warmup)

    @property
    def in_warmup(self) -> bool:
        return self.episode < self.warmup

    # ----------------------------------------------------------------- ActionNoise
    def __call__(self) -> np.ndarray:
        self._draws += 1
        sigma = self.sigma * self.unit_scale
        if self.mean_fn is not None and sigma > 0:
            mu = np.clip(np.asarray(self.mean_fn(), dtype=np.float64), -1.0, 1.0)
            noise = truncated_normal(self.rng, sigma, -1.0 - mu, 1.0 - mu)
        else:
            width = np.full(self.action_dim, 2.0)  # of SB3's normalised box [-1, 1]
            noise = truncated_normal(self.rng, sigma, -width, width)
        return noise.astype(np.float32)

    def reset(self) -> None:
        """End of an episode: advance the schedule (a reset with no draw since the last is ignored)."""
        if self._draws > 0:
            self.episode += 1
            self._draws = 0

    # ----------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {"episode": self.episode, "draws": self._draws, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episode = int(state["episode"])
        self._draws = int(state.get("draws", 0))
        self.rng.bit_generator.state = state["rng"]

    def __getstate__(self) -> dict[str, Any]:
        # SB3 pickles ``action_noise`` with the model; a bound method of the model must not go along.
        state = self.__dict__.copy()
        state["mean_fn"] = None
        return state

    def __repr__(self) -> str:
        return (f"TruncatedNormalNoise(sigma={self.sigma0}, decay={self.decay}, warmup={self.warmup}, "
                f"episode={self.episode})")
