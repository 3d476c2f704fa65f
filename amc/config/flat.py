"""A flat dataclass view of a sectioned configuration model (``cfg.epochs`` for ``train.epochs``).

The library's config classes (:class:`amc.training.TrainConfig`, :class:`amc.finetune.FinetuneConfig`,
:class:`benchmarks.suite.BenchConfig`) are made here from their pydantic models: one keyword argument
per leaf, named by its flat name (:func:`amc.config.cli.flat_name`), with the model's default; the
model validates every instance, so the defaults and checks have one owner, and a bad value is one
:class:`amc.errors.AmcError` line naming the option.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from operator import attrgetter
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from amc.config.cli import config_fields, flat_name, nest_flat_keys, validation_message
from amc.errors import AmcError

__all__ = ["FlatConfig", "flat_config"]


class FlatConfig:
    """Methods of the flat configs; ``MODEL`` is the pydantic model, ``WHAT`` names it in errors."""

    MODEL: ClassVar[type[BaseModel]]
    WHAT: ClassVar[str]
    KEYS: ClassVar[str] = "options"  # names the keys in from_dict's error: "unknown training options [...]"

    def __post_init__(self) -> None:
        opts = self.validate({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})  # type: ignore[arg-type]
        for f in config_fields(self.MODEL):
            setattr(self, flat_name(f.path), attrgetter(f.path)(opts))

    @classmethod
    def validate(cls, data: Mapping[str, Any], *, source: str | None = None) -> Any:
        """``data`` (flat or nested) as the validated model; ``AmcError`` naming the option otherwise."""
        try:
            return cls.MODEL.model_validate(nest_flat_keys(cls.MODEL, data))
        except ValidationError as e:
            raise AmcError(validation_message(e, source or cls.WHAT, cls.MODEL)) from None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Strictly from flat keys (a stored ``config``): an unknown key is one error listing the valid ones."""
        names = set(cls.field_names())
        unknown = set(d) - names
        if unknown:
            raise AmcError(f"unknown {cls.KEYS} {sorted(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**dict(d))

    def options(self) -> Any:
        """The nested, typed form of this config."""
        return self.validate(self.to_dict())

    @classmethod
    def from_options(cls, opts: BaseModel) -> Any:
        return cls(**{flat_name(f.path): attrgetter(f.path)(opts) for f in config_fields(cls.MODEL)})

    @classmethod
    def field_names(cls) -> list[str]:
        return [flat_name(f.path) for f in config_fields(cls.MODEL)]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]


def flat_config(name: str, model: type[BaseModel], *, module: str, doc: str, base: type = FlatConfig,
                what: str | None = None, keys: str = "options") -> type:
    """A dataclass named ``name`` with one field per leaf of ``model`` (its flat name, type and default)."""
    specs = []
    for f in config_fields(model):
        d = f.default
        spec = dataclasses.field(default_factory=lambda d=d: copy.deepcopy(d)) if isinstance(d, (dict, list)) \
            else dataclasses.field(default=d)
        specs.append((flat_name(f.path), f.annotation, spec))
    return dataclasses.make_dataclass(name, specs, bases=(base,), namespace={
        "__module__": module, "__doc__": doc, "MODEL": model, "WHAT": what or name, "KEYS": keys})
