"""What may be decided per layer, and the mapping from a normalised action in [0, 1] to a choice.

The RL agent emits one value ``a`` in [0, 1] per decision; Optuna samplers suggest the same ``a``
through :meth:`Space.suggest`, so every agent searches the very same space and the environment does
the same budget enforcement for all of them. The spaces: keep ratios (AMC) and bit widths (HAQ).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from amc.errors import AmcError

__all__ = ["Space", "UnitSpace", "KeepRatioSpace", "BitSpace", "space_for"]


def _clip(a: float) -> float:
    return min(1.0, max(0.0, float(a)))


class Space(ABC):
    """A decision's choices, reached from a normalised action ``a`` in [0, 1]."""

    kind: str = ""

    @abstractmethod
    def to_value(self, a: float) -> Any:
        """The choice for action ``a`` (clipped to [0, 1])."""

    @abstractmethod
    def to_action(self, value: Any) -> float:
        """An action in [0, 1] that maps back to ``value``."""

    def suggest(self, trial: Any, name: str) -> float:
        """The normalised action for ``name`` sampled by an Optuna trial."""
        return float(trial.suggest_float(name, 0.0, 1.0))


@dataclass(frozen=True)
class UnitSpace(Space):
    """The normalised action itself, in [0, 1] (for environments that map actions themselves)."""

    kind: str = "action"

    def to_value(self, a: float) -> float:
        return _clip(a)

    def to_action(self, value: float) -> float:
        return _clip(value)


@dataclass(frozen=True)
class KeepRatioSpace(Space):
    """Preserve ratio in [lbound, 1] (AMC, He et al. 2018: lbound 0.2): ``ratio = lbound + a * (1 - lbound)``.

    The bounds are checked with the config (``lbound`` in (0, 1]).
    """

    lbound: float = 0.2
    kind: str = "prune"

    def to_value(self, a: float) -> float:
        return self.lbound + _clip(a) * (1.0 - self.lbound)

    def to_action(self, value: float) -> float:
        return 1.0 if self.lbound == 1.0 else _clip((float(value) - self.lbound) / (1.0 - self.lbound))


@dataclass(frozen=True)
class BitSpace(Space):
    """Integer bit width in [b_min, b_max]: ``round(a * (b_max - b_min + 1) + b_min - 0.5)`` (HAQ, Wang et al.
    2019, Sec. 3.2), clipped to the range (``1 <= b_min <= b_max <= 8``, checked with the config)."""

    b_min: int = 2
    b_max: int = 8
    kind: str = "w_bits"

    def to_value(self, a: float) -> int:
        # round(x) of x = a * n + b_min - 0.5, halves rounded up
        bits = math.floor(_clip(a) * (self.b_max - self.b_min + 1) + self.b_min)
        return int(min(self.b_max, max(self.b_min, bits)))

    def to_action(self, value: int) -> float:
        # centre of the action interval that maps to ``value``
        n = self.b_max - self.b_min + 1
        return _clip((int(value) - self.b_min + 0.5) / n)


def space_for(kind: str, *, lbound: float = 0.2, w_bits: tuple[int, int] = (2, 8),
              a_bits: tuple[int, int] = (2, 8)) -> Space:
    """The space of a decision kind: ``"prune"``, ``"sparsity"``, ``"w_bits"`` or ``"a_bits"``."""
    if kind in ("prune", "sparsity"):
        return KeepRatioSpace(lbound=lbound, kind=kind)
    if kind in ("w_bits", "a_bits"):
        return BitSpace(*(w_bits if kind == "w_bits" else a_bits), kind=kind)
    raise AmcError(f"unknown decision kind {kind!r}; valid: prune, sparsity, w_bits, a_bits")
