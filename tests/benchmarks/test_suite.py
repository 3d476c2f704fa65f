"""The benchmark suite (``amc bench``): a tiny end-to-end run on digits + the LeNet-5 reference
checkpoint (uniform, DDPG and TPE, a few evaluations, a few fine-tuning steps), reuse of finished
stages, config checks and the episode-time split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amc.cli import main
from amc.errors import AmcError
from benchmarks.harness import episode_split
from benchmarks.suite import PRESETS, BenchConfig, render_report, run_benchmark
from tests._paths import ROOT

ROOT = ROOT
CKPT = ROOT / "reference" / "lenet5-digits.pt"
TINY = ["--episodes", "3", "--warmup", "1", "--ft-steps", "3", "--reward-val", "all", "--test-size", "all",
        "--latency-batches", "1", "8", "--latency-time", "0", "--latency-rounds", "1", "--ft-seeds", "0", "1",
        "--budget-band", "0.05"]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """``amc bench`` on digits/LeNet-5 through the CLI (~15 s)."""
    out = tmp_path_factory.mktemp("bench") / "out"
    rc = main(["bench", "--checkpoint", str(CKPT), "--dataset", "digits", "--out", str(out), *TINY])
    assert rc == 0
    return out


def _cfg(out: Path, **kw) -> BenchConfig:
    return BenchConfig(checkpoint=str(CKPT), episodes=3, warmup=1, ft_steps_per_epoch=3, reward_val=None,
                       test_size=None, latency_batches=(1, 8), latency_min_time_s=0.0, latency_rounds=1,
                       preset="quick", **kw)


def test_tiny_benchmark_results(tiny_run: Path):
    res = json.loads((tiny_run / "results.json").read_text())
    assert res["format"] == "amc-bench" and res["version"] == 1
    assert res["data"] == {**res["data"], "dataset": "digits", "val_size": 300, "reward_val_images": 300,
                           "test_images": 360, "train_images": 1137}
    assert len(res["environment"]["loadavg_start"]) == 3 and len(res["environment"]["loadavg_end"]) == 3
    base = res["base"]
    assert base["test_top1"] == pytest.approx(98.61, abs=0.01)  # the reference checkpoint's (README)
    methods = {m["agent"]: m for m in res["methods"]}
    assert list(methods) == ["uniform", "ddpg", "tpe"]
    assert methods["ddpg"]["evaluations"] == methods["tpe"]["evaluations"] == 3  # equal evaluations
    assert methods["uniform"]["single_policy"] and methods["uniform"]["evaluations"] >= 2  # bisection probes
    for m in methods.values():
        assert m["macs_ratio"] <= 0.5 + 1e-3  # the budget is met by the model as built
        assert m["val_top1"] == pytest.approx(m["search_val_top1"], abs=1e-6)  # apply_policy reproduces the search
        assert 0.0 <= m["test_top1"] <= 100.0
        ft = m["finetune"]
        assert ft["steps"] == 3 and ft["config"]["kd"] is True and 0.0 <= ft["test_top1"] <= 100.0
        assert ft["seeds"] == [0, 1] and [r["seed"] for r in ft["runs"]] == [0, 1]  # one fine-tune per seed
        runs = [r["test_top1"] for r in ft["runs"]]
        assert ft["test_top1"] == pytest.approx(sum(runs) / 2) and ft["test_top1_std"] >= 0
        if m["agent"] != "uniform":  # the band: searched policies end within 5 % under the budget
            assert m["macs_ratio"] >= 0.5 * 0.95 - 1e-3
        assert set(m["latency_ms"]) == {"1", "8"} and all(v > 0 for v in m["latency_ms"].values())
        assert m["speedup"]["1"] == pytest.approx(
            res["latency"]["results"]["uncompressed"]["1"]["median_ms"] / m["latency_ms"]["1"])
        assert (tiny_run / f"finetune-{m['agent']}" / "final.pt").is_file()
    speed = res["search_speed"]
    assert speed["ddpg"]["evaluations"] == 3 and speed["tpe"]["evaluations"] == 3
    assert 1 <= speed["ddpg"]["evaluations_to_within_0.5"] <= 3
    s = speed["ddpg"]["split"]["all"]
    assert s["episodes"] == 2  # the first episode is left out
    parts = s["prune"] + s["reconstruct"] + s["quantize"] + s["proxy"] + s["evaluate"] + s["env_other"] + s["agent"]
    assert parts == pytest.approx(s["episode_s"], rel=1e-6) and s["evaluate"] > 0
    assert speed["ddpg"]["split"]["explore"]["episodes"] == 2  # per phase (episodes.csv), the warm-up one left out
    report = (tiny_run / "report.md").read_text()
    for text in ("| method | evaluations |", "| uniform | 1 policy (", "ResNet-56", "92.80", "91.90", "90.20",
                 "## (b) Search speed", "What differs", "load average"):
        assert text in report
    assert report == render_report(res)


def test_rerun_reuses_finished_stages(tiny_run: Path):
    cfg = _cfg(tiny_run, dataset="digits", agents=("uniform", "ddpg", "tpe"), latency_threads=1, ft_seeds=(0, 1),
               budget_band=0.05)
    before = json.loads((tiny_run / "results.json").read_text())
    int8 = {"runs": [{"model": "lenet5", "backend": "fx", "threads": 1,
                      "results": [{"batch_size": 1, "fp32_ms": 0.5, "int8_ms": 0.25, "speedup": 2.0}]}], "note": "n"}
    (tiny_run / "int8.json").write_text(json.dumps(int8))  # (c): picked up from OUT/int8.json
    res = run_benchmark(cfg, out_dir=tiny_run)
    assert res["extras"]["int8"]["data"] == int8
    assert "| lenet5 | 1 | 0.500 | 0.250 | 2.00x | fx | 1 |" in (tiny_run / "report.md").read_text()
    assert not any(v for k, v in res["computed_now"].items() if k != "latency")
    assert [m["test_top1"] for m in res["methods"]] == [m["test_top1"] for m in before["methods"]]
    assert [m["finetune"]["test_top1"] for m in res["methods"]] == [m["finetune"]["test_top1"]
                                                                   for m in before["methods"]]
    with pytest.raises(AmcError, match="other settings.*episodes"):
        run_benchmark(BenchConfig(**{**cfg.to_dict(), "episodes": 4}), out_dir=tiny_run)
    # one agent in a session of its own, on a busy machine: no latency stage, the earlier latency kept
    lat = (tiny_run / "latency.json").read_text()
    res = run_benchmark(BenchConfig(**{**cfg.to_dict(), "agents": ("ddpg",), "latency_batches": ()}), out_dir=tiny_run)
    assert [m["agent"] for m in res["methods"]] == ["ddpg"] and res["methods"][0]["latency_ms"] == {}
    assert res["latency"]["results"] == {} and (tiny_run / "latency.json").read_text() == lat
    assert "| ddpg |" in (tiny_run / "report.md").read_text()


def test_evaluations_to_within(tmp_path):
    from benchmarks.harness import evaluations_to_within

    log = tmp_path / "episodes.csv"
    log.write_text("episode,accuracy\n0,50\n1,70\n2,60\n3,70.6\n4,71\n")
    assert evaluations_to_within(log) == 4  # best 71: 70.6 is the first within 0.5
    assert evaluations_to_within(log, points=2.0) == 2
    assert evaluations_to_within(tmp_path / "none.csv") is None


def test_episode_split_numbers():
    recs = [{"prune": 9.0, "reconstruct": 0.0, "quantize": 0.0, "evaluate": 9.0, "env_other": 0.0, "agent": 0.0,
             "episode_s": 18.0},
            {"prune": 1.0, "reconstruct": 0.0, "quantize": 0.0, "evaluate": 2.0, "env_other": 0.5, "agent": 0.5,
             "episode_s": 4.0},
            {"prune": 3.0, "reconstruct": 0.0, "quantize": 0.0, "evaluate": 4.0, "env_other": 0.5, "agent": 0.5,
             "episode_s": 8.0}]
    out = episode_split(recs, ["warmup", "warmup", "explore"])
    assert out["all"]["episodes"] == 2 and out["all"]["episode_s"] == 6.0 and out["all"]["prune"] == 2.0
    assert out["all"]["evaluate_fraction"] == pytest.approx(0.5)
    assert out["warmup"]["episodes"] == 1 and out["warmup"]["episode_s"] == 4.0
    assert out["explore"]["evaluate"] == 4.0
    assert episode_split(recs[:1])["all"]["episodes"] == 1  # a single episode is kept
    assert episode_split([]) == {}


def test_config_checks_and_presets():
    q = BenchConfig.from_preset("quick", checkpoint="x.pt")
    assert (q.episodes, q.warmup, q.reward_val, q.ft_steps_per_epoch) == (30, 10, 1000, 120)
    f = BenchConfig.from_preset("full", checkpoint="x.pt", test_size=123)
    assert (f.episodes, f.warmup, f.reward_val, f.test_size) == (300, 100, None, 123)
    assert set(PRESETS) == {"quick", "full"}
    assert "threads" not in q.comparable() and "episodes" in q.comparable()
    for bad, match in (({"agents": ("ddpg", "nope")}, "unknown agent"), ({"episodes": 0}, "episodes"),
                       ({"target": "macs=2"}, "macs"), ({"kd_alpha": 1.5}, "kd_alpha"),
                       ({"latency_batches": (0,)}, "latency_batches"), ({"agents": ("tpe", "tpe")}, "twice")):
        with pytest.raises(AmcError, match=match):
            BenchConfig(checkpoint="x.pt", **bad)
    with pytest.raises(AmcError, match="preset"):
        BenchConfig.from_preset("medium", checkpoint="x.pt")


def test_an_existing_benchmark_folder_still_resumes():
    """A real folder's bench_config.json: its keys and values are what BenchConfig writes, so it compares equal."""
    from benchmarks.suite import _SESSION_KEYS

    old = json.loads((ROOT / "bench_state" / "r20-proxy" / "bench_config.json").read_text())["config"]
    cfg = BenchConfig(**old)
    assert cfg.to_dict() == old
    assert cfg.comparable() == {k: v for k, v in old.items() if k not in _SESSION_KEYS}
    assert BenchConfig.from_preset("full", **{k: v for k, v in old.items() if k != "preset"}).to_dict() == old


def test_bench_defaults_are_the_models_and_the_presets():
    from amc.config.bench import BenchOptions
    from amc.config.search import EnvOptions
    from amc.finetune import FinetuneConfig

    cfg, env, ft = BenchConfig(checkpoint="x.pt"), EnvOptions(), FinetuneConfig()
    assert (cfg.lbound, cfg.proxy, cfg.calibration_size, cfg.budget_band) == (env.lbound, env.proxy,
                                                                              env.calibration_size, env.budget_band)
    assert (cfg.ft_lr, cfg.ft_batch_size, cfg.kd_temperature, cfg.kd_alpha) == (ft.lr, ft.batch_size,
                                                                                ft.kd_temperature, ft.kd_alpha)
    assert BenchConfig.from_options(BenchOptions(data={"checkpoint": "x.pt"})) == cfg
    assert BenchConfig.from_preset("quick", checkpoint="x.pt").reward_val == PRESETS["quick"]["reward_val"]


def test_bench_print_config_round_trips(tmp_path, capsys):
    argv = ["bench", "--checkpoint", "x.pt", "--out", str(tmp_path / "o"), "--full", "--reward-val", "500",
            "--test-size", "all", "--no-latency", "--agents", "ddpg,tpe", "--round-to", "8", "--ft-steps", "all",
            "--no-kd", "--int8-json", "i.json", "--env.lbound", "0.3"]
    assert main([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "b.yaml").write_text(printed)
    assert main(["bench", "--config", str(tmp_path / "b.yaml"), "--out", "o", "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    cfg = BenchConfig.from_options(BenchConfig.validate(yaml_load(printed)))
    assert (cfg.preset, cfg.episodes, cfg.reward_val, cfg.test_size, cfg.latency_batches, cfg.agents) == (
        "full", 300, 500, None, (), ("ddpg", "tpe"))
    assert (cfg.round_to, cfg.ft_steps_per_epoch, cfg.kd, cfg.lbound, cfg.extras) == (8, None, False, 0.3,
                                                                                     {"int8": "i.json"})
    assert main(["bench", "--out", "o", "--checkpoint", "x.pt", "--kd-alpha", "2", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: bench config: finetune.kd_alpha='2'")


def yaml_load(text: str):
    import yaml

    return yaml.safe_load(text)


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert main(["bench", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_launcher_script_help():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout and "--checkpoint" in r.stdout


@pytest.mark.parametrize("name", ["r20kd-full-results.json", "r20-full-results.json", "r20-nocutout-full-results.json"])
def test_published_results_still_render(name) -> None:
    """Results written before the proxy stage was timed render with "-" in its column."""
    results = json.loads((ROOT / "docs" / "bench" / name).read_text())
    report = render_report(results)
    speed = [line for line in report.splitlines() if line.startswith("| uniform |") and "%" in line]
    assert speed and speed[0].split("|")[7].strip() == "-"


def test_load_extras_finds_the_scripts_default_outputs(tmp_path, monkeypatch):
    from benchmarks.suite import load_extras

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench_out" / "transfer").mkdir(parents=True)
    (tmp_path / "bench_out" / "transfer" / "bench_transfer.json").write_text(json.dumps({"models": {"x": 1}}))
    (tmp_path / "bench_int8.json").write_text(json.dumps({"rows": []}))
    found = load_extras(tmp_path / "out")
    assert found["transfer"] == {"path": str(Path("bench_out/transfer/bench_transfer.json")), "data": {"models": {"x": 1}}}
    assert found["int8"]["path"] == "bench_int8.json"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "transfer.json").write_text(json.dumps({"models": {}}))  # the bench's own folder first
    assert load_extras(tmp_path / "out")["transfer"]["path"] == str(tmp_path / "out" / "transfer.json")
