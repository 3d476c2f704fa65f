"""Gymnasium environments of amc: layer-by-layer compression decisions under a hard budget."""

from __future__ import annotations

import gymnasium as gym

from envs.compression import OBS_FEATURES, CompressionEnv, Decision, EnvConfig
from envs.rewards import REWARDS

ENV_ID = "amc/Compression-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="envs.compression:CompressionEnv")

__all__ = ["CompressionEnv", "EnvConfig", "Decision", "REWARDS", "OBS_FEATURES", "ENV_ID"]
