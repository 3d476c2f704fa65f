"""stable-baselines3 callbacks used by the DDPG agent.

The agent calls ``model.learn`` once per episode (see :mod:`agents.ddpg` for why), so the callbacks
stay small: they look at each environment step and hand the episode's final ``info`` back.
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["EpisodeInfoCallback", "TorchThreadsCallback"]


class EpisodeInfoCallback(BaseCallback):
    """Keeps the ``info`` of the last step of each finished episode (the env puts the policy, its
    metrics, the applied actions and timings there).

    ``pop()`` returns the infos gathered since the previous call, oldest first.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._finished: list[dict[str, Any]] = []

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"]):
            if done:
                self._finished.append(info)
        return True

    def pop(self) -> list[dict[str, Any]]:
        out, self._finished = self._finished, []
        return out



class TorchThreadsCallback(BaseCallback):
    """Runs the gradient updates with ``train_threads`` torch CPU threads and the rollouts with the
    threads that were set before.

    The actor/critic updates are tiny (300-300 MLPs, batch 64): on a small or busy CPU, intra-op
    threading makes them tens of times slower, while the env's model evaluation in the rollout does
    profit from every core. SB3 calls ``on_rollout_end`` right before ``train()`` and
    ``on_rollout_start`` after it, which is where the thread count is switched.
    """

    def __init__(self, train_threads: int = 1, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.train_threads = int(train_threads)
        self._rollout_threads: int | None = None

    def _on_rollout_start(self) -> None:
        if self._rollout_threads is not None:
            torch.set_num_threads(self._rollout_threads)
            self._rollout_threads = None

    def _on_rollout_end(self) -> None:
        self._rollout_threads = torch.get_num_threads()
        torch.set_num_threads(self.train_threads)

    def _on_training_end(self) -> None:
        self._on_rollout_start()

    def _on_step(self) -> bool:
        return True
