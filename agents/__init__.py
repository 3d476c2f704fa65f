"""Search drivers: AMC's DDPG (stable-baselines3) and, registered by their modules, the baselines
(Optuna samplers in :mod:`agents.optuna_agents`, uniform and presets in :mod:`agents.uniform`, the sensitivity table + knapsack in
:mod:`agents.sensitivity`).

Every agent is an :class:`Agent` picked by name from :data:`AGENTS` and writes its outputs through
:class:`SearchRecorder`. ``run_search(SearchConfig(...))`` runs a whole search.

A new agent module registers its class with ``@AGENTS.register("name")`` and is imported below.
"""

from __future__ import annotations

from agents._base import AGENTS, Agent, stop_on_signals
from agents._recorder import EPISODE_COLUMNS, BestRecord, SearchRecorder, plot_policy, read_episodes
from agents.ddpg import DDPGAgent, DDPGConfig
from agents.noise import TruncatedNormalNoise
from agents.optuna_agents import OptunaAgent, OptunaConfig
from agents.search import SearchConfig, load_search_config, run_search
from agents.sensitivity import SensitivityAgent, solve_mckp
from agents.uniform import PresetAgent, UniformAgent

__all__ = [
    "AGENTS",
    "Agent",
    "BestRecord",
    "DDPGAgent",
    "DDPGConfig",
    "EPISODE_COLUMNS",
    "OptunaAgent",
    "OptunaConfig",
    "PresetAgent",
    "SearchConfig",
    "SearchRecorder",
    "SensitivityAgent",
    "TruncatedNormalNoise",
    "UniformAgent",
    "load_search_config",
    "plot_policy",
    "read_episodes",
    "run_search",
    "solve_mckp",
    "stop_on_signals",
]
