"""The experiment scripts under scripts/ are configurations of benchmarks.harness.Experiment."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks.harness import Experiment
from tests._paths import ROOT

SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py")
                 if p.name.startswith("bench_") or p.name == "check_eval_precision.py")


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
