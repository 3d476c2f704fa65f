"""Shared fixtures: keep this small (tiny data, tiny models)."""

from __future__ import annotations
