"""The command line generated from a configuration model (amc.config.cli)."""

from __future__ import annotations

import argparse
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from amc.config import add_config_arguments, config_fields, dump_config, resolve_config
from amc.errors import AmcError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Data(_Strict):
    dataset: Literal["digits", "cifar10"] = Field("digits", description="dataset", json_schema_extra={"flag": "--dataset"})
    val_size: int | float | None = Field(None, description="held-out images (count or fraction)")


class Env(_Strict):
    target: str = Field("macs=0.5", description="hard budget", json_schema_extra={"flag": "--target"})
    lbound: float = Field(0.2, gt=0, le=1, description="smallest keep ratio")
    w_bits: tuple[int, int] = Field((2, 8), description="weight bit range")
    reconstruct: bool | None = Field(None, description="older switch")
    options: dict[str, Any] = Field(default_factory=dict, description="further options")


class Agent(_Strict):
    episodes: int = Field(400, ge=1, description="episodes in all", json_schema_extra={"flag": "--episodes"})
    lr: float = Field(1e-3, gt=0, description="learning rate")


class Search(_Strict):
    data: Data = Data()
    env: Env = Env()
    agent: Agent = Agent()


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="t")
    add_config_arguments(p, Search, sections={"env": "what to search"})
    return p.parse_args(argv)


def test_fields_are_walked_in_order_with_dotted_paths() -> None:
    paths = [f.path for f in config_fields(Search)]
    assert paths == ["data.dataset", "data.val_size", "env.target", "env.lbound", "env.w_bits", "env.reconstruct",
                     "env.options", "agent.episodes", "agent.lr"]


def test_defaults_then_file_then_options(tmp_path) -> None:
    assert resolve_config(Search, _parse([])) == Search()
    f = tmp_path / "c.yaml"
    f.write_text("env:\n  lbound: 0.3\nagent:\n  episodes: 50\n")
    cfg = resolve_config(Search, _parse(["--episodes", "60", "--env.w-bits", "4", "8", "--agent.lr", "1e-4",
                                         "--dataset", "cifar10", "--data.val-size", "0.1"]), config=f)
    assert cfg.env.lbound == 0.3 and cfg.agent.episodes == 60 and cfg.env.w_bits == (4, 8)
    assert cfg.agent.lr == pytest.approx(1e-4) and cfg.data.dataset == "cifar10" and cfg.data.val_size == 0.1
    assert resolve_config(Search, _parse(["--data.val-size", "500"])).data.val_size == 500


def test_booleans_mappings_and_none() -> None:
    cfg = resolve_config(Search, _parse(["--env.no-reconstruct", "--env.options", "a=1", "--env.options", "b=x"]))
    assert cfg.env.reconstruct is False and cfg.env.options == {"a": 1, "b": "x"}
    assert resolve_config(Search, _parse(["--data.val-size", "null"])).data.val_size is None


def test_a_flat_file_is_read_into_its_sections(tmp_path) -> None:
    f = tmp_path / "flat.yaml"
    f.write_text("episodes: 7\nlbound: 0.5\nenv:\n  target: size=0.25\n")
    cfg = resolve_config(Search, _parse([]), config=f)
    assert (cfg.agent.episodes, cfg.env.lbound, cfg.env.target) == (7, 0.5, "size=0.25")


def test_print_config_reads_back_unchanged(tmp_path) -> None:
    cfg = resolve_config(Search, _parse(["--episodes", "9", "--env.w-bits", "3", "6", "--env.options", "k=2"]))
    f = tmp_path / "dump.yaml"
    f.write_text(dump_config(cfg))
    again = resolve_config(Search, _parse([]), config=f)
    assert again == cfg and dump_config(again) == dump_config(cfg)


@pytest.mark.parametrize(("argv", "text", "message"), [
    (["--env.lbound", "3"], "", "env.lbound='3': Input should be less than or equal to 1"),
    (["--episodes", "many"], "", "agent.episodes='many'"),
    ([], "env:\n  lbund: 0.3\n", "unknown option 'env.lbund'"),
    ([], "agnt: {}\n", "unknown option 'agnt'"),
    ([], "- a\n- b\n", "must hold a mapping"),
])
def test_bad_input_is_one_line_naming_the_option(tmp_path, argv, text, message) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(AmcError) as info:
        resolve_config(Search, _parse(argv), config=f, what="search config")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("search config: ") or "must hold a mapping" in str(info.value)


def test_help_shows_everyday_names_and_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        _parse(["--help"])
    out = capsys.readouterr().out
    assert "--episodes EPISODES " in out and "--agent.episodes" not in out  # an everyday name is shown once
    assert "--env.reconstruct" in out and "--env.no-reconstruct: false" in " ".join(out.split())
    assert "smallest keep ratio (default: 0.2)" in out and "what to search:" in out
    assert "(default: 2 8)" in out


def test_a_missing_config_file_is_an_error(tmp_path) -> None:
    with pytest.raises(AmcError, match="does not exist"):
        resolve_config(Search, _parse([]), config=tmp_path / "nope.yaml")


def test_dotted_and_flat_names_stay_accepted_unshown() -> None:
    """A flagged field also takes its dotted name, and every field its flat (one-level) name."""
    cfg = resolve_config(Search, _parse(["--agent.episodes", "5", "--lbound", "0.5", "--w-bits", "3,6",
                                         "--no-reconstruct"]))
    assert (cfg.agent.episodes, cfg.env.lbound, cfg.env.w_bits, cfg.env.reconstruct) == (5, 0.5, (3, 6), False)


def test_unknown_keys_suggest_the_option_or_list_the_valid_ones(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("agent:\n  episodez: 3\n")
    with pytest.raises(AmcError, match="unknown option 'agent.episodez' \\(did you mean 'agent.episodes'\\?\\)"):
        resolve_config(Search, _parse([]), config=f)
    f.write_text("env:\n  zzz: 3\n")
    with pytest.raises(AmcError, match="unknown option 'env.zzz'; valid: target, lbound, w_bits"):
        resolve_config(Search, _parse([]), config=f)
