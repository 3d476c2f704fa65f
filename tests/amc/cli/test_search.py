"""SearchConfig, run_search and the ``amc search`` command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from agents import SearchConfig, read_episodes
from agents import search as search_mod
from agents.search import QUICKSTART, load_search_config, quickstart_path, run_search
from amc.cli import build_parser, main
from amc.cli.search import config_from_args, summary_table
from amc.errors import AmcError
from tests._toy_env import ToyCompressionEnv


def _args(*argv: str):
    return build_parser().parse_args(["search", *argv])


# ------------------------------------------------------------------------------------- config
def test_quickstart_file_matches_the_builtin_preset():
    assert yaml.safe_load(quickstart_path().read_text()) == QUICKSTART
    cfg = config_from_args(_args())
    assert cfg == SearchConfig(**QUICKSTART)
    assert (cfg.model, cfg.dataset, cfg.target, cfg.run_dir) == ("lenet5", "digits", "macs=0.5", "runs/quickstart")


def test_command_line_overrides_the_file(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"model": "mlp", "episodes": 50, "reconstruct": True, "run_dir": "x"}))
    cfg = config_from_args(_args("--config", str(preset), "--episodes", "7", "--no-reconstruct", "--agent-opt",
                                 "actor_lr=1e-3", "--agent-opt", "hidden=[64, 64]", "--w-bits", "3,6",
                                 "--val-size", "0.1", "--target", "params=0.3", "--resume"))
    assert (cfg.model, cfg.episodes, cfg.reconstruct, cfg.run_dir) == ("mlp", 7, False, "x")
    assert cfg.agent_kwargs == {"actor_lr": 1e-3, "hidden": [64, 64]}
    assert cfg.w_bits == (3, 6) and cfg.val_size == 0.1 and cfg.target == "params=0.3" and cfg.resume
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg  # round trip through config.yaml


def test_proxy_and_budget_band_options():
    cfg = config_from_args(_args("--proxy", "ft:10", "--calibration-size", "128", "--budget-band", "0.02"))
    assert (cfg.proxy, cfg.calibration_size, cfg.budget_band) == ("ft:10", 128, 0.02)
    assert config_from_args(_args()).proxy == "auto"
    with pytest.raises(AmcError, match="budget_band"):
        config_from_args(_args("--budget-band", "2"))
    with pytest.raises(AmcError, match="unknown proxy 'adabn'"):
        config_from_args(_args("--proxy", "adabn"))
    with pytest.raises(AmcError, match="calibration_size"):
        config_from_args(_args("--calibration-size", "0"))


@pytest.mark.parametrize(("change", "message"), [
    ({"target": "macs=2"}, "must be in \\(0, 1\\]"),
    ({"target": "flops=0.5"}, "unknown budget metric"),
    ({"mode": "shrink"}, "valid: prune, quant, joint"),
    ({"agent": "nope"}, "unknown agent 'nope'; valid: .*ddpg"),
    ({"model": "resnet7"}, "unknown model 'resnet7'; valid: .*lenet5"),
    ({"dataset": "mnist"}, "unknown dataset 'mnist'; valid: .*digits"),
    ({"lbound": 0.0}, "lbound"),
    ({"episodes": 0}, "episodes"),
    ({"noise_decay": 1.5}, "noise_decay"),
    ({"w_bits": (8, 2)}, "w_bits"),
    ({"resume": True, "overwrite": True}, "exclude each other"),
    ({"model": None}, "--model .* or a trained --checkpoint"),
    ({"device": "tpu"}, "device"),
])
def test_bad_config_values_say_what_to_do(change, message):
    with pytest.raises(AmcError, match=message):
        SearchConfig(**{**QUICKSTART, **change})


def test_unknown_yaml_key_lists_the_valid_ones(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: lenet5\nepisodez: 3\n")
    with pytest.raises(AmcError, match="unknown option 'episodez' \\(did you mean 'episodes'\\?\\)"):
        load_search_config(preset)


# ------------------------------------------------------------------------------------- CLI errors
def test_cli_unknown_agent_is_a_one_line_error(capsys):
    assert main(["search", "--agent", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "valid: " in err and "ddpg" in err


@pytest.mark.parametrize("argv", [
    ["--target", "macs=1.5"],
    ["--config", "/nonexistent/x.yaml"],
    ["--model", "nope"],
])
def test_cli_bad_inputs_exit_2(argv, capsys):
    assert main(["search", *argv]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_cli_rejects_bad_choices():
    with pytest.raises(SystemExit) as e:
        _args("--mode", "shrink")
    assert e.value.code == 2


def test_cli_refuses_a_run_dir_with_another_search(tmp_path, capsys):
    other = SearchConfig(**{**QUICKSTART, "target": "macs=0.7", "run_dir": str(tmp_path)})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(other.to_dict()))
    assert main(["search", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "different search" in err and "target" in err and "--resume" in err and "--run-dir" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # nothing was started


def test_same_search_with_results_needs_resume_or_overwrite(tmp_path):
    cfg = SearchConfig(**{**QUICKSTART, "run_dir": str(tmp_path)})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (tmp_path / "episodes.csv").write_text("episode,reward\n1,0.5\n")
    with pytest.raises(AmcError, match="--resume .*--overwrite"):
        run_search(cfg)
    # more episodes is not a different search: resuming is allowed
    search_mod._check_run_dir(dataclasses.replace(cfg, episodes=999, resume=True))


def test_summary_table_formats():
    text = summary_table({"agent": "ddpg", "episodes": 3, "episodes_planned": 3, "best_accuracy": 91.234,
                          "achieved": {"macs_ratio": 0.4987}, "run_dir": "runs/x", "best_reward": None})
    assert "91.23 %" in text and "macs 0.499" in text and "tensorboard --logdir runs/x" in text


# ------------------------------------------------------------------------------------- run_search
@pytest.fixture
def toy_env():
    """run_search with the toy env: fast, and the search's plumbing is what is tested here."""
    return lambda model, splits, env_cfg, **kw: ToyCompressionEnv()


def test_run_search_pretrains_searches_and_resumes(tmp_path, toy_env, caplog):
    run_dir = tmp_path / "run"
    cfg = SearchConfig(model="lenet5", dataset="digits", train_epochs=1, episodes=4, warmup=2, checkpoint_every=2,
                       run_dir=str(run_dir), device="cpu")
    rows = []
    with caplog.at_level("INFO"):
        summary = run_search(cfg, progress=rows.append, env_factory=toy_env)
    assert "training lenet5 on digits for 1 epoch" in caplog.text
    assert summary["episodes"] == 4 and not summary["interrupted"] and len(rows) == 4
    assert summary["model_source"]["source"] == "trained" and (run_dir / "pretrain" / "final.pt").is_file()
    for name in ("config.yaml", "episodes.csv", "best_policy.json", "best_policy.png", "summary.json", "search",
                 "checkpoint"):
        assert (run_dir / name).exists(), name

    caplog.clear()
    with caplog.at_level("INFO"):
        more = run_search(dataclasses.replace(cfg, episodes=6, resume=True), env_factory=toy_env)
    assert "using the model pretrained earlier" in caplog.text
    assert more["episodes"] == 6
    assert [r["episode"] for r in read_episodes(run_dir / "episodes.csv")] == [1, 2, 3, 4, 5, 6]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["episodes"] == 6


def test_checkpoint_must_match_model_and_dataset(tmp_path, toy_env):
    from amc.models import ModelSpec, build_model
    from amc.training import save_checkpoint

    digits_mlp = ModelSpec(name="mlp", num_classes=10, in_channels=1, image_size=(8, 8))
    path = tmp_path / "mlp.pt"
    save_checkpoint(path, model=build_model(digits_mlp), model_spec=digits_mlp, data={"dataset": "digits"})
    base = dict(dataset="digits", episodes=2, warmup=1, device="cpu")
    with pytest.raises(AmcError, match="holds a 'mlp' model, but model 'lenet5'"):
        run_search(SearchConfig(model="lenet5", checkpoint=str(path), run_dir=str(tmp_path / "a"), **base),
                   env_factory=toy_env)
    cifar = ModelSpec(name="mlp", num_classes=10, in_channels=3, image_size=(32, 32))
    path2 = tmp_path / "cifar.pt"
    save_checkpoint(path2, model=build_model(cifar), model_spec=cifar)
    with pytest.raises(AmcError, match="3x32x32 inputs .*'digits' has 10 classes and 1x8x8"):
        run_search(SearchConfig(checkpoint=str(path2), run_dir=str(tmp_path / "b"), **base), env_factory=toy_env)
    with pytest.raises(AmcError, match="does not exist"):
        run_search(SearchConfig(checkpoint=str(tmp_path / "none.pt"), run_dir=str(tmp_path / "c"), **base),
                   env_factory=toy_env)
    summary = run_search(SearchConfig(checkpoint=str(path), run_dir=str(tmp_path / "d"), **base), env_factory=toy_env)
    assert summary["model_source"]["source"] == "checkpoint" and summary["episodes"] == 2
    assert Path(tmp_path / "d" / "best_policy.json").is_file()


# ------------------------------------------------------------------------------------- the real thing
def test_cli_search_end_to_end_with_ctrl_c_and_resume(tmp_path, capsys, monkeypatch):
    """`amc search` on digits/lenet5 with the real CompressionEnv: Ctrl-C, then --resume."""
    import os
    import signal

    pytest.importorskip("envs")
    run_dir = tmp_path / "qs"
    argv = ["search", "--train-epochs", "2", "--episodes", "5", "--warmup", "2", "--run-dir", str(run_dir),
            "--checkpoint-every", "100"]
    original = search_mod._TqdmProgress.__call__

    def ctrl_c_at_episode_2(self, row):
        original(self, row)
        if row["episode"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(search_mod._TqdmProgress, "__call__", ctrl_c_at_episode_2)
    assert main(argv) == 130
    out, err = capsys.readouterr()
    assert "search interrupted" in out and "--resume" in err
    assert torch.load(run_dir / "checkpoint" / "state.pt", weights_only=False)["episode"] == 2
    assert main(argv) == 2  # the same command without --resume must not clobber the run
    assert "--resume" in capsys.readouterr().err

    monkeypatch.setattr(search_mod._TqdmProgress, "__call__", original)
    assert main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "search finished" in out and "best val top-1" in out
    rows = read_episodes(run_dir / "episodes.csv")
    assert [r["episode"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["macs_ratio"] <= 0.5 + 1e-6 for r in rows)
    summary = yaml.safe_load((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 5 and summary["model_source"]["source"] == "pretrained"
    from amc.policy import Policy

    assert Policy.load(run_dir / "best_policy.json").model["name"] == "lenet5"


def test_baseline_command_defaults_to_tpe_and_refuses_ddpg(tmp_path: Path) -> None:
    from amc.cli import build_parser, main

    args = build_parser().parse_args(["baseline", "--run-dir", str(tmp_path / "b")])
    assert getattr(args, "agent.name") == "tpe"
    assert main(["baseline", "--agent", "ddpg", "--run-dir", str(tmp_path / "c")]) == 2


def test_resume_dir_reuses_the_saved_config(tmp_path: Path) -> None:
    from amc.cli import build_parser
    from amc.cli.search import config_from_args

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": "mlp", "dataset": "digits", "target": "macs=0.4",
                                                          "agent": "random", "episodes": 7, "run_dir": str(run_dir)}))
    cfg = config_from_args(build_parser().parse_args(["search", "--resume", str(run_dir), "--episodes", "9"]))
    assert (cfg.model, cfg.target, cfg.agent, cfg.episodes, cfg.resume) == ("mlp", "macs=0.4", "random", 9, True)
    assert cfg.run_dir == str(run_dir)


# ------------------------------------------------------------------------------------- SearchOptions
def test_print_config_reads_back_unchanged(tmp_path, capsys):
    assert main(["search", "--print-config", "--episodes", "7", "--env.round-to", "8", "--w-bits", "3,6",
                 "--agent-opt", "actor_lr=1e-4", "--val-size", "0.1"]) == 0
    text = capsys.readouterr().out
    nested = yaml.safe_load(text)
    assert set(nested) == {"data", "model", "env", "agent", "run"}
    assert (nested["agent"]["episodes"], nested["env"]["round_to"], nested["env"]["w_bits"]) == (7, 8, [3, 6])
    assert nested["agent"]["agent_kwargs"] == {"actor_lr": 1e-4} and nested["data"]["val_size"] == 0.1
    f = tmp_path / "printed.yaml"
    f.write_text(text)
    assert main(["search", "--config", str(f), "--print-config"]) == 0
    assert capsys.readouterr().out == text
    assert config_from_args(_args("--config", str(f))) == config_from_args(
        _args("--episodes", "7", "--round-to", "8", "--w-bits", "3", "6", "--agent-opt", "actor_lr=1e-4",
              "--val-size", "0.1"))


SHIPPED = sorted((Path(search_mod.__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """The shipped presets (flat keys) are read into their sections."""
    assert len(SHIPPED) >= 3
    flat = yaml.safe_load(path.read_text())
    cfg = config_from_args(_args("--config", str(path)))
    assert {k: getattr(cfg, k) for k in flat} == {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}
    assert load_search_config(path) == cfg


def test_search_options_own_the_defaults():
    from typing import get_args

    from amc.config.search import EnvOptions, Precision, SearchOptions
    from amc.policy import GRANULARITIES, MODES
    from envs import EnvConfig

    env = EnvOptions.model_fields
    assert get_args(env["mode"].annotation) == MODES and get_args(env["granularity"].annotation) == GRANULARITIES
    assert get_args(env["eval_precision"].annotation) == get_args(Precision)
    cfg = SearchConfig(model="lenet5")
    opts = cfg.options()
    assert isinstance(opts, SearchOptions) and opts.agent.episodes == cfg.episodes == 400 and opts.model.name == "lenet5"
    assert (cfg.lbound, cfg.budget_band, cfg.eval_batch_size, cfg.device, cfg.run_dir) == (0.2, 0.02, 512, "auto",
                                                                                            "runs/search")
    assert EnvConfig().lbound == env["lbound"].default and EnvConfig().budget_band == 0.0  # the env's own default
    assert SearchConfig.from_dict(opts.model_dump()) == cfg  # nested mappings are read too


@pytest.mark.parametrize(("text", "argv", "message"), [
    ("mode: shrink\n", [], "env.mode='shrink': valid: prune, quant, joint"),
    ("env:\n  granularity: coarse\n", [], "env.granularity='coarse': valid: channel, fine"),
    ("", ["--episodes", "many"], "agent.episodes='many': Input should be a valid integer"),
    ("", ["--env.lbound", "1.5"], "env.lbound='1.5': Input should be less than or equal to 1"),
    ("agent:\n  episodez: 3\n", [], "unknown option 'agent.episodez' (did you mean 'agent.episodes'?)"),
    ("env:\n  zzz: 1\n", [], "unknown option 'env.zzz'; valid: mode, target"),
    ("agnt:\n  episodes: 3\n", [], "unknown option 'agnt' (did you mean 'agent'?)"),
])
def test_cli_bad_config_is_one_error_line(tmp_path, capsys, text, argv, message):
    f = tmp_path / "c.yaml"
    f.write_text("model: lenet5\n" + text)
    assert main(["search", "--config", str(f), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: search config: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(("argv", "message"), [
    (["--agent-opt", "tau=0"], "agent.agent_kwargs: ddpg option: tau=0: Input should be greater than 0"),
    (["--agent-opt", "lr=1"], "unknown ddpg option(s) lr in agent_kwargs (--agent-opt KEY=VALUE); valid: hidden, "),
    (["--agent", "tpe", "--agent-opt", "population_size=1"], "tpe option: population_size=1"),
])
def test_agent_options_are_checked_with_the_config(argv, message, capsys):
    """A bad --agent-opt is one error line before any work is done (the agent's own options model)."""
    assert main(["search", *argv, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: search config: ") and message in err, err
