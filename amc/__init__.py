"""amc: AutoML model compression (AMC/HAQ-style RL and Optuna searches) on any reasonable CNN."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
