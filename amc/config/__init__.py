"""Typed configuration: pydantic models, and the command line generated from them (:mod:`amc.config.cli`)."""

from amc.config.cli import (
    add_config_arguments,
    config_fields,
    dump_config,
    flat_name,
    load_yaml,
    nest_flat_keys,
    preset_defaults,
    resolve_config,
    set_path,
    validation_message,
)

__all__ = ["add_config_arguments", "config_fields", "dump_config", "flat_name", "load_yaml", "nest_flat_keys",
           "preset_defaults", "resolve_config", "set_path", "validation_message"]
