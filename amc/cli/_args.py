"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse

#: ``--precision`` choices; the same keys as ``amc.training.PRECISIONS`` (not imported: that loads torch)
PRECISION_CHOICES = ("fp32", "bf16", "fp16")


def count_or_fraction(s: str) -> int | float:
    """``--val-size``: an image count (``5000``) or a fraction of the train split (``0.1``)."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {s!r}") from None
    return int(v) if v.is_integer() and v >= 1 else v
