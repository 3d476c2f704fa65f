"""The experiment scripts under scripts/ are configurations of benchmarks.harness.Experiment."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks.harness import Experiment
from tests._paths import ROOT

SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py")
                 if p.name.startswith(("bench_", "check_")))


def _load(path):
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_every_benchmark_script_is_an_experiment(path) -> None:
    experiment = _load(path).EXPERIMENT
    assert isinstance(experiment, Experiment)
    text = experiment.parser().format_help()
    assert "--out" in text and "--threads" in text


def test_a_script_runs_end_to_end_and_records_the_machine(tmp_path) -> None:
    out = tmp_path / "int8.json"
    rc = _load(ROOT / "scripts" / "bench_int8.py").EXPERIMENT.main(
        ["--models", "lenet5", "--batch-sizes", "1", "--repeats", "2", "--warmup", "1", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["runs"][0]["model"] == "lenet5" and doc["runs"][0]["results"][0]["fp32_ms"] > 0
    assert doc["machine"]["threads"] == 1 and "loadavg_end" in doc


def test_slimming_arms_run_apart_and_share_one_result(tmp_path) -> None:
    """bench_slimming's arms in separate processes (here: calls) end in one slimming.json with both arms; the
    slimming arm's penalty leaves its norm scales smaller than the plain arm's from the same start."""
    main = _load(ROOT / "scripts" / "bench_slimming.py").EXPERIMENT.main
    common = ["--model", "resnet20", "--dataset", "digits", "--epochs", "1", "--ft-epochs", "1", "--steps-per-epoch",
              "3", "--lam", "0.05", "--threads", "1", "--out", str(tmp_path)]
    assert main([*common, "--arms", "slimming"]) == 0
    assert main([*common, "--arms", "none", "--precision", "bf16", "--channels-last"]) == 0
    arms = json.loads((tmp_path / "slimming.json").read_text())["arms"]
    assert set(arms) == {"none", "slimming"}
    assert arms["slimming"]["scale_mean"] < arms["none"]["scale_mean"]
    for arm in arms.values():
        assert arm["macs_ratio"] <= 0.5 + 1e-6 and 0 <= arm["finetuned_test_top1"] <= 100


def _bench_state_repo(tmp_path):
    """A scratch git repository holding a copy of scripts/bench_state.sh, with one benchmark folder."""
    import shutil
    import subprocess

    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "bench_state.sh", tmp_path / "scripts")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    run = tmp_path / "bench_out" / "b1" / "runs" / "ft-seed0"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"state")
    return lambda *args: subprocess.run(["bash", str(tmp_path / "scripts" / "bench_state.sh"), *args],
                                        capture_output=True, text=True)


def test_bench_state_keeps_run_folders_and_refuses_what_git_would_drop(tmp_path) -> None:
    state = _bench_state_repo(tmp_path)
    saved = state("save", "b1")
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "bench_state" / "b1" / "runs" / "ft-seed0" / "last.pt").read_bytes() == b"state"
    # a finished fine-tune keeps its summary and model, not its training state
    done = tmp_path / "bench_out" / "b1" / "runs" / "ft-seed1"
    done.mkdir()
    for name in ("last.pt", "final.pt", "finetune_summary.json", "model.amc"):
        (done / name).write_text("x")
    assert state("save", "b1").returncode == 0
    assert sorted(p.name for p in (tmp_path / "bench_state" / "b1" / "runs" / "ft-seed1").iterdir()) == [
        "finetune_summary.json", "model.amc"]
    # a file the repository ignores would not reach the next session: save says so and fails
    (tmp_path / ".gitignore").write_text("*.pt\n")
    refused = state("save", "b1")
    assert refused.returncode == 2 and refused.stderr.startswith("error:") and "last.pt" in refused.stderr
    # restore never overwrites a folder that is still there
    kept = state("restore", "b1")
    assert kept.returncode == 2 and "exists" in kept.stderr
