"""``amc compare`` and benchmarks.compare: table (mean ± std over seeds), JSON, figures, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import SearchConfig, run_search
from amc.cli import main
from amc.errors import AmcError
from benchmarks.compare import best_so_far, compare_runs, find_runs, front_accuracy, load_run, policy_accuracy
from tests._paths import LENET_DIGITS

REF = LENET_DIGITS


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two tpe seeds, one uniform and one nsga2 run on digits (a few evaluations each)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    base = dict(checkpoint=str(REF), dataset="digits", device="cpu", target="macs=0.5")
    for agent, seed, kw in [("tpe", 0, {}), ("tpe", 1, {}), ("uniform", 0, {}),
                            ("nsga2", 0, {"target": "macs=1.0", "agent_kwargs": {"population_size": 4}})]:
        run_search(SearchConfig(**{**base, **kw}, agent=agent, seed=seed, episodes=12,
                                run_dir=str(root / f"{agent}-s{seed}")))
    torch.set_num_threads(before)
    return root


def test_compare_writes_table_json_figures_and_tensorboard(runs, tmp_path):
    out = tmp_path / "cmp"
    result = compare_runs([runs], out_dir=out, test=True)
    for name in ("compare.md", "compare.json", "curves.png", "pareto.png", "policies.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tb").glob("events.out.tfevents.*"))
    doc = json.loads((out / "compare.json").read_text())
    assert doc["format"] == "amc-compare" and len(doc["runs"]) == 4
    groups = {(g["agent"], g["target"]): g for g in doc["groups"]}
    assert set(groups) == {("tpe", "macs=0.5"), ("uniform", "macs=0.5"), ("nsga2", "macs=1.0")}
    tpe = groups[("tpe", "macs=0.5")]
    accs = [r["best_accuracy"] for r in doc["runs"] if r["agent"] == "tpe"]
    assert tpe["runs"] == 2 and tpe["seeds"] == [0, 1]
    assert tpe["best_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert tpe["best_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert tpe["evaluations"]["mean"] == 12 and tpe["achieved"]["macs_ratio"]["max"] <= 0.5 + 1e-9
    uni = groups[("uniform", "macs=0.5")]
    assert uni["runs"] == 1 and 1 < uni["evaluations"]["mean"] < 12  # probes counted, one episode recorded
    assert groups[("nsga2", "macs=1.0")]["multi_objective"] and groups[("nsga2", "macs=1.0")]["pareto_size"] >= 1
    assert all(r["test_accuracy"] is not None for r in doc["runs"] if r["agent"] != "nsga2")
    assert tpe["test_accuracy"]["n"] == 2 and 0 < tpe["test_accuracy"]["mean"] <= 100
    nsga2 = groups[("nsga2", "macs=1.0")]
    assert set(nsga2["front_at"]) == {"macs=0.5"}
    md = (out / "compare.md").read_text()
    assert "its test top-1 (%)" in md and "at macs <= 0.5" in md
    assert "| tpe | macs=0.5 | 2 | 12 ± 0 |" in md and f"{np.mean(accs):.2f} ± {np.std(accs, ddof=1):.2f}" in md
    assert "front of" in md and "![curves](curves.png)" in md
    assert result["figures"]["pareto"] == str(out / "pareto.png")


def test_best_so_far_follows_the_reward():
    rows = [{"reward": 0.5, "accuracy": 50.0}, {"reward": 0.4, "accuracy": 90.0}, {"reward": 0.7, "accuracy": 70.0}]
    assert best_so_far(rows).tolist() == [50.0, 50.0, 70.0]


def test_find_runs_expands_a_parent_and_refuses_non_runs(runs, tmp_path):
    assert [p.name for p in find_runs([runs])] == ["nsga2-s0", "tpe-s0", "tpe-s1", "uniform-s0"]
    assert find_runs([runs / "tpe-s0", runs / "tpe-s0"]) == [runs / "tpe-s0"]
    with pytest.raises(AmcError, match="does not exist"):
        find_runs([tmp_path / "nope"])
    with pytest.raises(AmcError, match="no summary.json"):
        load_run(tmp_path)
    run = load_run(runs / "uniform-s0")
    assert run.agent == "uniform" and run.evaluations > run.episodes == 1 and run.policy is not None


def test_cli_compare(runs, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["compare", str(runs / "tpe-s0"), str(runs / "uniform-s0"), "--out", str(out),
                 "--no-tensorboard"]) == 0
    text = capsys.readouterr().out
    assert "# Search comparison" in text and "| uniform | macs=0.5 |" in text and str(out / "compare.json") in text
    assert not (out / "pareto.png").exists() and (out / "policies.png").is_file() and not (out / "tb").exists()
    assert main(["compare", str(tmp_path / "empty")]) == 2


def test_policy_is_rebuilt_exactly_as_the_search_measured_it(runs):
    for name in ("tpe-s0", "uniform-s0"):
        run = load_run(runs / name)
        assert policy_accuracy(run, split="val") == pytest.approx(run.best_accuracy)
        assert 50 < policy_accuracy(run, split="test") <= 100


def test_front_accuracy_answers_the_budget_question(runs):
    run = load_run(runs / "nsga2-s0")
    trials = run.pareto["trials"]
    best = max(t["accuracy"] for t in trials if t["macs_ratio"] <= 0.5)
    assert front_accuracy(run, "macs=0.5") == best
    assert front_accuracy(run, "params=0.5") is None and front_accuracy(load_run(runs / "tpe-s0"), "macs=0.5") is None
