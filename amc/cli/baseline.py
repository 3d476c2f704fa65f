"""``amc baseline``: ``amc search`` with a baseline agent (default ``tpe``).

Every option of ``amc search`` applies; ``--agent`` picks the baseline (``tpe``, ``cmaes``, ``gp``,
``random``, ``nsga2``, ``motpe``, ``uniform``, ``preset:deep``, ``preset:ends``). The run directory,
TensorBoard keys and policy are the same as a DDPG search's, so ``amc compare`` can put them side by side.
"""

from __future__ import annotations

import argparse

from amc.cli import search


def add_parser(p: argparse.ArgumentParser) -> None:
    search.add_parser(p, agent="tpe")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "agent.name", None) == "ddpg":
        from amc.errors import AmcError

        raise AmcError("amc baseline runs the baselines; use `amc search --agent ddpg` for the RL agent")
    return search.run(args)
