"""amc: AutoML model compression (AMC/HAQ-style RL and Optuna searches) on any reasonable CNN."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str) -> Any:
    # lazy: ``import amc`` (and ``amc --help``) must not import torch
    if name == "load":
        from amc.export import load

        return load
    raise AttributeError(f"module 'amc' has no attribute {name!r}")
