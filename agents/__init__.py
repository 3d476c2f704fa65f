"""Search drivers: AMC's DDPG (stable-baselines3) and, registered by their modules, the baselines.

Every agent is an :class:`Agent` picked by name from :data:`AGENTS` and writes its outputs through
:class:`SearchRecorder`. ``run_search(SearchConfig(...))`` runs a whole search.

A new agent module registers its class with ``@AGENTS.register("name")`` and is imported below.
"""

from __future__ import annotations

from agents._base import AGENTS, Agent, stop_on_signals
from agents._recorder import EPISODE_COLUMNS, BestRecord, SearchRecorder, plot_policy, read_episodes
from agents.ddpg import DDPGAgent, DDPGConfig
from agents.noise import TruncatedNormalNoise
from agents.search import SearchConfig, load_search_config, run_search

__all__ = [
    "AGENTS",
    "Agent",
    "BestRecord",
    "DDPGAgent",
    "DDPGConfig",
    "EPISODE_COLUMNS",
    "SearchConfig",
    "SearchRecorder",
    "TruncatedNormalNoise",
    "load_search_config",
    "plot_policy",
    "read_episodes",
    "run_search",
    "stop_on_signals",
]
