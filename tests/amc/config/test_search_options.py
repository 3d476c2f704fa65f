"""The search's options and the env's settings share one rule per check."""

from __future__ import annotations

import pytest

from amc.config.env import EnvSettings
from amc.config.search import SearchOptions
from amc.errors import AmcError
from envs.compression import EnvConfig


@pytest.mark.parametrize("bits", [(2, 16), (0, 8), (6, 4)])
def test_bit_ranges_have_one_rule(bits) -> None:
    """``amc search`` refuses what the env would refuse (at most 8 bits), before any work is done."""
    with pytest.raises(ValueError, match=r"1 <= min <= max <= 8"):
        SearchOptions.model_validate({"env": {"w_bits": bits}})
    with pytest.raises(ValueError, match=r"1 <= min <= max <= 8"):
        EnvSettings.model_validate({"a_bits": bits})
    with pytest.raises(AmcError, match=r"1 <= min <= max <= 8"):
        EnvConfig(w_bits=bits)


def test_widest_bit_range_is_accepted() -> None:
    assert SearchOptions.model_validate({"model": {"name": "lenet5"}, "env": {"w_bits": (1, 8)}}).env.w_bits == (1, 8)
    assert EnvConfig(a_bits=(1, 8)).a_bits == (1, 8)
