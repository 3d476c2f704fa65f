"""Episode rewards, picked by name (AMC Sec. 3.4; accuracy in percent, costs in natural units).

``acc`` is the reward of AMC's resource-constrained protocol: the budget is enforced by the
environment, so the reward is just accuracy (scaled to [0, 1]). The others are AMC's
accuracy-guaranteed family: ``-error * ln(cost)``, trading accuracy against a cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from amc._registry import Registry

RewardFn = Callable[[float, Mapping[str, float]], float]

REWARDS: Registry = Registry("reward")


@REWARDS.register("acc")
def acc_reward(accuracy: float, costs: Mapping[str, float]) -> float:
    """``acc * 0.01`` (AMC's ``acc_reward``)."""
    return accuracy * 0.01


@REWARDS.register("acc_flops")
def acc_flops_reward(accuracy: float, costs: Mapping[str, float]) -> float:
    """``-(100 - acc) * 0.01 * ln(MACs)`` (AMC's ``acc_flops_reward``)."""
    return -(100.0 - accuracy) * 0.01 * math.log(max(costs["macs"], 1.0))


@REWARDS.register("acc_size")
def acc_size_reward(accuracy: float, costs: Mapping[str, float]) -> float:
    """``-(100 - acc) * 0.01 * ln(weight storage bits)``."""
    return -(100.0 - accuracy) * 0.01 * math.log(max(costs["size_bits"], 1.0))


@REWARDS.register("acc_latency")
def acc_latency_reward(accuracy: float, costs: Mapping[str, float]) -> float:
    """``-(100 - acc) * 0.01 * ln(latency in microseconds)`` (predicted by the latency table)."""
    return -(100.0 - accuracy) * 0.01 * math.log(max(costs["latency_ms"] * 1000.0, 1.0))
