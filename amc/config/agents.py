"""``AgentKwargs``: the base of an agent's own options, given as ``agent_kwargs`` (``--agent-opt KEY=VALUE``).

An agent declares its options as pydantic fields (default, bounds, description); :meth:`AgentKwargs.from_dict`
reads ``agent_kwargs`` into them, so every agent refuses an unknown key, or a bad value, with one
:class:`amc.errors.AmcError` line that names the option and the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from amc.config.cli import validation_message
from amc.config.search import _Section
from amc.errors import AmcError

__all__ = ["AgentKwargs"]


class AgentKwargs(_Section):
    """An agent's options; ``from_dict(config.agent_kwargs, agent=name)`` validates them."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, *, agent: str) -> Any:
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.model_fields))
        if unknown:
            raise AmcError(f"unknown {agent} option(s) {', '.join(unknown)} in agent_kwargs (--agent-opt KEY=VALUE); "
                           f"valid: {', '.join(cls.model_fields)}")
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            raise AmcError(validation_message(e, f"{agent} option")) from None

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_dump().items()}
