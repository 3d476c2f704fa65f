"""amc fidelity: the rank statistics, and a whole (tiny) study: files, resume, refusals."""

from __future__ import annotations

import json

import pytest

from amc.cli import main
from amc.errors import AmcError
from benchmarks.fidelity import FidelityConfig, rank_stats, run_fidelity
from tests._paths import LENET_DIGITS

LENET = str(LENET_DIGITS)


def test_rank_stats():
    up = rank_stats([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert up["spearman"] == pytest.approx(1) and up["kendall"] == pytest.approx(1) and up["top3"] == 3
    down = rank_stats([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert down["spearman"] == pytest.approx(-1) and down["top3"] == 1  # only the middle one is shared
    mixed = rank_stats([1, 2, 3, 4], [2, 1, 4, 3])
    assert mixed["spearman"] == pytest.approx(0.6) and mixed["kendall"] == pytest.approx(1 / 3)
    assert rank_stats([1, 1, 1], [1, 2, 3])["spearman"] is None  # a constant score ranks nothing
    assert rank_stats([1, 2], [1, 2])["spearman"] is None and rank_stats([1, 2], [1, 2])["n"] == 2


def _cfg(**kw) -> FidelityConfig:
    base = dict(checkpoint=LENET, dataset="digits", target="macs=0.5", policies=5, proxies=["vanilla", "reconstruct"],
                val_sizes=[100], calibration_size=64, epochs=1, threads=1)
    return FidelityConfig(**{**base, **kw})


def test_study_writes_its_report_and_resumes(tmp_path):
    out = tmp_path / "fid"
    doc = run_fidelity(_cfg(), out)
    a = doc["analysis"]
    assert set(a["proxies"]) == {"vanilla", "reconstruct"}
    assert len(a["policies"]) == 5 and a["policies"][0]["source"] == "uniform"
    for p in a["policies"]:
        assert p["achieved"] <= 0.5 + 1e-9 and 0 < p["ft_val_top1"] <= 100
    # the scores are the val top-1 of the really pruned model: reconstruction repairs LeNet
    assert sum(p["score_reconstruct"] for p in a["policies"]) > sum(p["score_vanilla"] for p in a["policies"])
    assert set(a["val_sizes"]["vanilla"]) == {"100", "300"}
    assert a["proxies"]["vanilla"]["all"]["n"] == 5
    for name in ("fidelity.json", "fidelity.md", "scatter-vanilla.png", "scatter-reconstruct.png", "policies.json"):
        assert (out / name).is_file(), name
    md = (out / "fidelity.md").read_text()
    assert "| vanilla |" in md and "| reconstruct |" in md and "Load average" in md
    finished = (out / "finetune" / "p01" / "metrics.json").stat().st_mtime_ns
    with pytest.raises(AmcError, match="--resume"):
        run_fidelity(_cfg(), out)
    with pytest.raises(AmcError, match="other settings \\(epochs\\)"):
        run_fidelity(_cfg(epochs=2), out, resume=True)
    again = run_fidelity(_cfg(), out, resume=True)  # nothing is recomputed
    assert (out / "finetune" / "p01" / "metrics.json").stat().st_mtime_ns == finished
    assert again["analysis"]["proxies"]["reconstruct"]["all"] == a["proxies"]["reconstruct"]["all"]
    assert [p["ft_val_top1"] for p in again["analysis"]["policies"]] == [p["ft_val_top1"] for p in a["policies"]]
    assert json.loads((out / "fidelity.json").read_text())["format"] == "amc-fidelity"


def test_bad_settings_are_refused(tmp_path, capsys):
    with pytest.raises(AmcError, match="at least 2 policies"):
        _cfg(policies=1)
    with pytest.raises(AmcError, match="not auto"):
        _cfg(proxies=["auto"])
    with pytest.raises(AmcError, match="macs= or params="):
        _cfg(target="bitops=0.1")
    assert main(["fidelity", "--checkpoint", LENET, "--proxies", "bogus", "--out", str(tmp_path / "x")]) == 2
    assert "error: unknown proxy 'bogus'" in capsys.readouterr().err
    assert main(["fidelity", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()  # nothing written before the inputs check out
