"""docs/results.md: its tables are the benchmark JSON, rendered."""

from __future__ import annotations

import json

import pytest

from amc.errors import AmcError
from benchmarks.results import DOCUMENTS, main, render, update


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_the_committed_documents_are_up_to_date(path):
    assert not update(path, check=True), "run python -m benchmarks.results"


def test_a_marked_table_is_rendered_from_its_json(tmp_path):
    (tmp_path / "bench").mkdir()
    runs = [{"seed": 0, "test_top1": 87.4}, {"seed": 1, "test_top1": 87.6}]
    doc = {"methods": [{"agent": "uniform", "macs_ratio": 0.49, "params_ratio": 0.51, "search_val_top1": 74.7,
                        "runs": runs}]}
    (tmp_path / "bench" / "ft.json").write_text(json.dumps(doc))
    text = "intro\n<!-- results: finetunes bench/ft.json -->\nstale\n<!-- /results -->\noutro\n"
    out = render(text, tmp_path)
    assert "stale" not in out and out.startswith("intro\n") and out.endswith("<!-- /results -->\noutro\n")
    row = next(line for line in out.splitlines() if line.startswith("| uniform"))
    assert row.split(" | ")[-1] == "87.50 ± 0.14 |"
    assert render(out, tmp_path) == out  # idempotent


def test_check_reports_a_stale_document_and_bad_markers_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "s.json").write_text(json.dumps({"arms": {"none": {
        "lambda": 0.0, "test_top1": 98.0, "scale_mean": 1.0, "macs_ratio": 0.5, "finetuned_test_top1": 95.0}}}))
    md = tmp_path / "results.md"
    md.write_text("<!-- results: slimming bench/s.json -->\nold\n<!-- /results -->\n")
    assert main(["--path", str(md), "--check"]) == 1 and "old" in md.read_text()
    assert main(["--path", str(md)]) == 0 and "95.00 %" in md.read_text()
    assert main(["--path", str(md), "--check"]) == 0
    md.write_text("<!-- results: nosuch bench/s.json -->\n<!-- /results -->\n")
    capsys.readouterr()
    assert main(["--path", str(md)]) == 2
    assert capsys.readouterr().err.startswith("error: unknown table renderer 'nosuch'")
    with pytest.raises(AmcError, match="not found"):
        render("<!-- results: slimming bench/missing.json -->\n<!-- /results -->\n", tmp_path)
