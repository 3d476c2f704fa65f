"""EnvConfig: the flat view of amc.config.env.EnvSettings (defaults, one-line errors, round trip)."""

from __future__ import annotations

import dataclasses

import pytest

from agents.search import SearchConfig
from amc.config.env import LIBRARY_DEFAULTS, EnvSettings
from amc.errors import AmcError
from envs import EnvConfig


def _defaults(cls) -> dict:
    return {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls)}


def test_defaults_come_from_the_model() -> None:
    model = {name: info.get_default(call_default_factory=True) for name, info in EnvSettings.model_fields.items()}
    assert _defaults(EnvConfig) == model
    assert EnvConfig().to_dict() == {k: list(v) if isinstance(v, tuple) else v for k, v in model.items()}


def test_only_the_library_defaults_differ_from_amc_search() -> None:
    env, search = _defaults(EnvConfig), _defaults(SearchConfig)
    differ = {k for k in set(env) & set(search) if env[k] != search[k]}
    assert differ == set(LIBRARY_DEFAULTS)
    assert {k: env[k] for k in differ} == LIBRARY_DEFAULTS == {"budget_band": 0.0, "eval_batch_size": 1000,
                                                               "device": "cpu"}


@pytest.mark.parametrize("bad, match", [
    ({"lbound": 1.5}, "lbound=1.5"),
    ({"round_to": 0}, "round_to=0"),
    ({"eval_limit": 0}, "eval_limit=0"),
    ({"w_bits": (4, 2)}, r"w_bits=\(4, 2\): must satisfy 1 <= min <= max <= 8"),
    ({"a_bits": (2, 16)}, "a_bits"),
    ({"budget_band": -0.1}, "budget_band=-0.1"),
    ({"importance": "bogus"}, "unknown importance 'bogus'; valid: "),
    ({"mode": "joint", "target": "bitops=0.3", "eval_precision": "bf16"}, "mode 'prune' only"),
    ({"granularity": "fine", "target": "macs=0.5"}, "use one of: params=, size="),
    ({"proxy": "ft:0"}, "unknown proxy"),
])
def test_a_bad_value_is_one_error_line(bad, match) -> None:
    with pytest.raises(AmcError, match=match) as err:
        EnvConfig(**bad)
    assert str(err.value).startswith("EnvConfig: ") and "\n" not in str(err.value)


def test_from_dict_names_unknown_keys_and_lists_the_valid_ones() -> None:
    with pytest.raises(AmcError) as err:
        EnvConfig.from_dict({"target": "macs=0.5", "lr": 1, "epochs": 3})
    msg = str(err.value)
    assert "\n" not in msg and "['epochs', 'lr']" in msg
    assert msg.endswith("valid: " + ", ".join(sorted(f.name for f in dataclasses.fields(EnvConfig))))


def test_round_trip_replace_and_assignment() -> None:
    cfg = EnvConfig(mode="joint", target="bitops=0.3", w_bits=[3, 6], reconstruct=True, eval_limit=100)
    assert cfg.w_bits == (3, 6) and cfg.to_dict()["w_bits"] == [3, 6]
    assert (cfg.proxy, cfg.reconstruct, cfg.metric, cfg.ratio) == ("reconstruct", True, "bitops", 0.3)
    assert EnvConfig.from_dict(cfg.to_dict()) == cfg
    again = dataclasses.replace(cfg, budget_band=0.0)  # normalising twice changes nothing
    assert again == cfg
    assert dataclasses.replace(EnvConfig(proxy="bn", reconstruct=True), seed=3).reconstruct is False
    with pytest.raises(AmcError, match="lbound"):
        dataclasses.replace(cfg, lbound=0)
    cfg.seed = 7  # plain attributes, as before
    assert cfg.seed == 7
