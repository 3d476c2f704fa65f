"""The README's Python API block runs as shown (a doctest of the user's guide, not a check of its prose)."""

from __future__ import annotations

import re
from pathlib import Path

from tests._paths import ROOT

ROOT = ROOT


def _api_block() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section holds one python block"
    return blocks[0]


def test_readme_python_api_block_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "reference").symlink_to(ROOT / "reference")  # the block's paths are relative to the repository
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_api_block(), "README.md (Python API)", "exec"), scope)
    ratio = float(capsys.readouterr().out.split()[-1])
    assert 0.0 < ratio < 0.5  # half the channels of every layer: in and out both shrink
    small, cost, summary = scope["small"], scope["cost"], scope["summary"]
    x = scope["splits"].tensors("val")[0][:2]
    assert small(x).shape == (2, 10)
    assert summary["achieved"]["macs_ratio"] <= 0.5 + 1e-9
    assert Path(summary["best_policy"]).is_file() and summary["episodes"] == 100
    assert cost.base_macs > 0
