"""A command line generated from a pydantic configuration model, in the manner of ``HfArgumentParser``.

Every leaf field of a (nested) model becomes an option named by its dotted path (``--env.lbound``);
a field may also carry an everyday name (``Field(..., json_schema_extra={"flag": "--episodes"})``).
``--help`` shows each option's description and default. A run's configuration is, in order: the
model's defaults, a YAML file (``--config``), then the options given on the command line; pydantic
validates the result once, and every problem is one :class:`amc.errors.AmcError` line that names the
option, so the CLI prints one ``error:`` line and exits with 2.

Why not jsonargparse or tyro (both tried): tyro prints pydantic's validation errors in a multi-line
box on stderr, even with ``console_outputs=False``, and jsonargparse cannot give a nested key an
everyday alias (``--episodes`` for ``agent.episodes``). Both rules are part of amc's CLI contract.
What this module adds over argparse is small: it walks ``model_fields``, and pydantic does the types.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from amc.errors import AmcError

__all__ = ["ConfigField", "config_fields", "add_config_arguments", "resolve_config", "dump_config", "load_yaml",
           "set_path", "validation_message", "key_value", "flat_name", "nest_flat_keys", "preset_defaults"]


class ConfigField(typing.NamedTuple):
    """One leaf option of a configuration model."""

    path: str  # dotted: "env.lbound"
    annotation: Any
    default: Any
    description: str
    flag: str | None  # the everyday name, e.g. "--episodes"
    cli: bool = True  # False: the command adds this option itself (``json_schema_extra={"cli": False}``)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def config_fields(model: type[BaseModel], prefix: str = "") -> Iterator[ConfigField]:
    """The leaf fields of ``model`` and of its nested models, depth first, in declaration order."""
    for name, info in model.model_fields.items():
        if _is_model(info.annotation):
            yield from config_fields(info.annotation, f"{prefix}{name}.")
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, Mapping) else {}
        default = info.get_default(call_default_factory=True)
        yield ConfigField(f"{prefix}{name}", info.annotation, default, info.description or "", extra.get("flag"),
                          bool(extra.get("cli", True)))


def flat_name(path: str) -> str:
    """The one-level name of a leaf (``agent.episodes`` -> ``episodes``; a section's ``name`` -> the section).

    Leaf names are unique across sections (one name per notion), so the flat names are the keys of a
    flat config file and the old one-level options (``--round-to``).
    """
    section, _, leaf = path.rpartition(".")
    return section.rsplit(".", 1)[-1] if leaf == "name" and section else leaf


def _strip_optional(annotation: Any) -> Any:
    """``X`` for ``X | None`` (``Optional[X]``), else ``annotation``."""
    rest = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return rest[0] if is_union and len(rest) == 1 else annotation


def _yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _scalar(text: str) -> Any:
    """A command-line word as YAML reads it (``null``, ``[1, 2]``, ``{a: 1}``), else the text itself."""
    value = _yaml(text)
    return text if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of an open mapping: the value is typed as YAML would (``1e-4`` too, a number)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. actor_lr=1e-4")
    parsed = _yaml(value)
    if isinstance(parsed, str):  # YAML 1.1 reads 1e-4 as a string
        with contextlib.suppress(ValueError):
            parsed = float(parsed)
    return key.strip(), parsed


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "(none)"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    return "none" if value is None else str(value)


def _negative(option: str) -> str:
    head, _, leaf = option[2:].rpartition(".")
    return f"--{head + '.' if head else ''}no-{leaf}"


class _Items(argparse.Action):
    """A list option: ``--w-bits 3 6`` or ``--w-bits 3,6``, each item typed as YAML reads it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [_scalar(p.strip()) for v in values for p in str(v).split(",") if p.strip()])


def add_config_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], *,
                         sections: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None,
                         config: str | None = None) -> dict[str, Any]:
    """Add one option per leaf field of ``model`` to ``parser``, grouped by top-level section.

    Options that are not given stay absent from the parsed namespace (``argparse.SUPPRESS``), so that
    only what the user typed overrides the file. ``sections`` titles the groups (``{"env": "what to
    search"}``); a section without a title is titled by its name. A field with an everyday ``flag`` is
    shown under that name only (its dotted name is still accepted), and each field's flat name is
    accepted too, unshown (``--round-to`` for ``--env.round-to``). ``defaults`` (dotted path -> value)
    replaces the model's defaults in the help text (e.g. a preset's values). ``config`` (its help) adds
    ``--config YAML`` and ``--print-config``. Returns the argument groups by section.
    """
    if config:
        parser.add_argument("--config", metavar="YAML", help=config)
        parser.add_argument("--print-config", action="store_true",
                            help="print the resolved configuration as YAML and exit")
    groups: dict[str, Any] = {}
    fields = [f for f in config_fields(model) if f.cli]
    taken = {f.flag for f in fields if f.flag} | {f"--{f.path.replace('_', '-')}" for f in fields}
    for f in fields:
        section = f.path.split(".", 1)[0] if "." in f.path else ""
        if section not in groups:
            info = model.model_fields.get(section)
            groups[section] = parser.add_argument_group((sections or {}).get(section, section or "options"),
                                                        description=info.description if info else None)
        group = groups[section]
        dotted = f"--{f.path.replace('_', '-')}"
        shown = f.flag or dotted
        hidden = [dotted] if f.flag and f.flag != dotted else []
        flat = f"--{flat_name(f.path).replace('_', '-')}"
        if flat not in taken:
            hidden.append(flat)
            taken.add(flat)
        default = (defaults or {}).get(f.path, f.default)
        kwargs: dict[str, Any] = {"dest": f.path, "default": argparse.SUPPRESS,
                                  "metavar": flat_name(f.path).upper(),
                                  "help": f"{f.description} (default: {_show(default)})".lstrip()}
        inner = _strip_optional(f.annotation)
        origin = typing.get_origin(inner)
        if inner is bool:  # --env.reconstruct / --env.no-reconstruct (and --reconstruct / --no-reconstruct)
            kwargs.update(action="store_const", const=True,
                          help=kwargs["help"][:-1] + f"; {_negative(shown)}: false)")
            group.add_argument(*[_negative(n) for n in [shown, *hidden]], dest=f.path, default=argparse.SUPPRESS,
                               action="store_const", const=False, help=argparse.SUPPRESS)
        elif origin is Literal:
            choices = typing.get_args(inner)
            kwargs.update(choices=choices, metavar="{" + ",".join(str(c) for c in choices) + "}",
                          type=type(choices[0]) if len({type(c) for c in choices}) == 1 else _scalar)
        elif origin in (dict, Mapping) or inner is dict:
            kwargs.update(type=key_value, action="append", metavar="KEY=VALUE")
        elif origin in (list, tuple) or inner in (list, tuple):
            kwargs.update(nargs="+", action=_Items)
        else:
            kwargs["type"] = _scalar
        group.add_argument(shown, **kwargs)
        if hidden:
            group.add_argument(*hidden, **{**kwargs, "help": argparse.SUPPRESS})
    return groups


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (an ``AmcError`` naming the file otherwise)."""
    p = Path(path)
    if not p.is_file():
        raise AmcError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise AmcError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise AmcError(f"config file {str(p)!r} must hold a mapping of options, not {type(data).__name__}")
    return data


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``path="a.b"``, creating the intermediate mappings."""
    *parents, leaf = path.split(".")
    for key in parents:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[leaf] = value


def nest_flat_keys(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """Place top-level keys that name a leaf field (``episodes: 10``) in their section (``agent``).

    Flat names are unique (:func:`flat_name`), so a flat file stays readable as the nested one; a
    section given a value that is not a mapping (``model: lenet5``) sets the section's ``name``. A key
    that is neither a section nor a leaf is left for pydantic to refuse.
    """
    leaves = {flat_name(f.path): f.path for f in config_fields(model) if "." in f.path}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = leaves.get(key)
        if key in model.model_fields and (isinstance(value, dict) or path != f"{key}.name"):
            path = None  # a section (or a top-level field) given as such
        if path is not None:
            set_path(out, path, value)
        elif isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def preset_defaults(model: type[BaseModel], preset: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted path -> value of the leaves a (flat or nested) preset sets: the help's defaults without ``--config``."""
    out, nested = {}, nest_flat_keys(model, preset)
    for f in config_fields(model):
        node: Any = nested
        for key in f.path.split("."):
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            out[f.path] = node
    return out


def _suggest(model: type[BaseModel], loc: list[str]) -> str:
    """`` (did you mean 'agent.episodes'?)`` for an unknown key, else the keys valid where it stands."""
    known = [name for f in config_fields(model) for name in (f.path, flat_name(f.path))]
    near = difflib.get_close_matches(".".join(loc), known, n=1)
    if near:
        return f" (did you mean {near[0]!r}?)"
    for key in loc[:-1]:
        info = model.model_fields.get(key)
        if info is None or not _is_model(info.annotation):
            return ""
        model = info.annotation
    return f"; valid: {', '.join(model.model_fields)}"


def validation_message(error: ValidationError, what: str, model: type[BaseModel] | None = None) -> str:
    """Pydantic's errors on one line: ``what: env.lbound=3: Input should be less than or equal to 1``.

    With ``model``, an unknown key names the option it most resembles (``did you mean 'agent.episodes'?``).
    """
    parts = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "literal_error":  # "Input should be 'a', 'b' or 'c'" -> "valid: a, b, c"
            msg = "valid: " + str((e.get("ctx") or {}).get("expected", "")).replace("' or '", "', '").replace("'", "")
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown option {loc!r}" + (_suggest(model, [str(p) for p in e["loc"]]) if model else ""))
        elif e["type"] == "missing":
            parts.append(f"{loc} is required")
        else:
            shown = "" if isinstance(e.get("input"), Mapping) else f"={e.get('input')!r}"  # a section: not its dict
            parts.append(f"{loc}{shown}: {msg}" if loc else msg)
    return f"{what}: " + "; ".join(parts)


def resolve_config(model: type[BaseModel], args: argparse.Namespace | Mapping[str, Any], *,
                   config: str | Path | Mapping[str, Any] | None = None, what: str = "config") -> BaseModel:
    """The validated ``model``: its defaults, then ``config`` (a YAML path or a mapping), then ``args``.

    ``args`` holds dotted option paths (as :func:`add_config_arguments` parses them); other attributes
    are ignored. ``KEY=VALUE`` lists become mappings.
    """
    data = nest_flat_keys(model, load_yaml(config) if isinstance(config, (str, Path)) else config or {})
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    paths = {f.path for f in config_fields(model)}
    for path, value in given.items():
        if path not in paths:
            continue
        if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            value = dict(value)  # KEY=VALUE options
        set_path(data, path, value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise AmcError(validation_message(e, what, model)) from None


def dump_config(config: BaseModel) -> str:
    """YAML that :func:`resolve_config` reads back to an equal configuration."""
    return yaml.dump(config.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False)


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists on one line (``w_bits: [2, 8]``)."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
