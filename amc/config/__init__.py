"""Typed configuration: pydantic models, and the command line generated from them (:mod:`amc.config.cli`)."""

from amc.config.cli import *  # noqa: F403
