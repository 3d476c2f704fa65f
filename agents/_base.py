"""The agent base class, the ``AGENTS`` registry and graceful stopping on Ctrl-C / SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from amc._registry import Registry
from amc.errors import AmcError
from search_spaces import Space, UnitSpace

if TYPE_CHECKING:
    import gymnasium as gym

    from agents._recorder import SearchRecorder
    from agents.search import SearchConfig

__all__ = ["Agent", "AGENTS", "stop_on_signals", "play_episode", "applied_unchanged", "env_decisions"]

logger = logging.getLogger(__name__)


class Agent(ABC):
    """A search driver: walks ``env`` episode by episode and reports every episode to ``recorder``.

    Subclasses register under a name (``@AGENTS.register("ddpg")``) and implement :meth:`run`, which
    runs until ``recorder.episode == episodes`` (continuing a resumed run from where its checkpoint
    or the recorder left off) or until :meth:`request_stop` was called: then the agent finishes the
    current episode, checkpoints and returns with ``self.interrupted = True``.

    :param env: a ``gymnasium.Env`` following the ``envs.CompressionEnv`` contract (docs/INTERNALS.md).
    :param config: the search config (``agents.search.SearchConfig``).
    :param recorder: where every episode and the best policy go.
    """

    name: ClassVar[str] = ""
    #: the agent's own options (an ``AgentKwargs``: ``agent_kwargs``, ``--agent-opt``), checked with the
    #: search config and read into ``self.params``; None: the agent checks them itself
    options: ClassVar[Any] = None

    def __init__(self, env: gym.Env, config: SearchConfig, recorder: SearchRecorder) -> None:
        self.env = env
        self.config = config
        self.recorder = recorder
        self.params: Any = (None if self.options is None
                            else self.options.from_dict(config.agent_kwargs, agent=self.name))
        self.interrupted = False
        self.evaluations = 0  # episodes played through :meth:`_episode`
        self._stop = threading.Event()

    @abstractmethod
    def run(self, episodes: int) -> None:
        """Run until ``episodes`` episodes in all have been recorded (or a stop was requested)."""

    def request_stop(self) -> None:
        """Ask the agent to stop at the end of the current episode (after checkpointing)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def summary_extra(self) -> dict[str, Any]:
        """Agent-specific entries for ``summary.json`` (override to add some)."""
        return {}

    def _episode(self, actions: Sequence[float]) -> dict[str, Any]:
        """Play one episode with ``actions`` from the search seed's reset and count it in ``evaluations``."""
        info = play_episode(self.env, actions, seed=int(self.config.seed))
        self.evaluations += 1
        return info


#: name -> Agent subclass; an unknown name raises ``ValueError`` listing the valid ones.
AGENTS: Registry[type[Agent]] = Registry("agent")


@contextmanager
def stop_on_signals(agent: Agent) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM ask ``agent`` to stop after the current episode.

    A second SIGINT aborts at once (``KeyboardInterrupt``), for when an episode takes too long.
    Outside the main thread (where Python cannot install handlers) this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if agent.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        agent.request_stop()
        logger.warning("%s received: finishing the current episode, saving a checkpoint, then stopping "
                       "(Ctrl-C again aborts without saving)", signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def env_decisions(env: Any) -> tuple[list[str], dict[str, Space]]:
    """The kind of each of the env's decisions (``"prune"`` when it names none) and the search space of
    each kind (``UnitSpace`` when it names none); ``AmcError`` unless the env has a positive
    ``n_decisions`` and one kind per decision."""
    base = env.unwrapped
    n = getattr(env, "n_decisions", None) or getattr(base, "n_decisions", None)
    if not n or int(n) < 1:
        raise AmcError("the env has no positive n_decisions (episode length); is it an amc CompressionEnv?")
    kinds = list(getattr(base, "decision_kinds", None) or ["prune"] * int(n))
    if len(kinds) != int(n):
        raise AmcError(f"env.decision_kinds has {len(kinds)} entries for {n} decisions")
    spaces = getattr(base, "spaces", None) or {}
    return kinds, {k: spaces.get(k, UnitSpace()) for k in set(kinds)}


def play_episode(env: Any, actions: Sequence[float], *, seed: int | None = None) -> dict[str, Any]:
    """Reset ``env`` and step it through ``actions`` (one per decision); the last step's ``info``
    (``policy``, ``metrics``, ``actions``, ``timing``)."""
    import numpy as np

    env.reset(seed=seed)
    info: dict[str, Any] = {}
    for a in actions:
        _, _, terminated, truncated, info = env.step(np.array([a], dtype=np.float32))
        if terminated or truncated:
            break
    if "metrics" not in info:
        raise RuntimeError("the env did not finish its episode after n_decisions steps")
    return info


def applied_unchanged(env: Any, actions: Sequence[float], info: dict[str, Any], *, tol: float = 1e-6) -> bool:
    """Whether the env's budget rules (:mod:`amc.budget`) left ``actions`` as asked in the episode
    that ended with ``info``: no keep ratio or density clipped by AMC's rule (``info["actions"]``
    holds the applied ones) and no bit width lowered by HAQ's (the policy's bits against the actions'). A
    budget band's raises do not count: the asked-for policy fitted the budget."""
    kinds, spaces = env_decisions(env)
    decisions = getattr(env.unwrapped, "decisions", None)
    applied = list(info.get("actions") or [])
    policy = info.get("policy")
    for i, (kind, a) in enumerate(zip(kinds, actions)):
        if kind in ("prune", "sparsity"):
            if i < len(applied) and applied[i] < a - tol:
                return False
        elif policy is not None and decisions is not None:  # HAQ lowers bits after the last step
            layer = policy.layers[decisions[i].layer]
            got = layer.w_bits if kind == "w_bits" else layer.a_bits
            if got is not None and got < int(spaces[kind].to_value(a)):  # a band's raise is no clip
                return False
    return True
