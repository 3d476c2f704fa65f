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


#: the subcommands whose options resolve into a config that ``--print-config`` prints without running
PRINTABLE = ("search", "train", "finetune", "bench", "fidelity")


def _shown_commands() -> list[str]:
    """Every ``amc`` command line of the README's and docs/results.md's shell blocks (continuations joined,
    trailing comments and redirections dropped)."""
    cmds = []
    for doc in ("README.md", "docs/results.md"):
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", (ROOT / doc).read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].split(" > ")[0].strip()
                if line.startswith("amc "):
                    cmds.append(" ".join(line.split()))
    return cmds


def test_readme_commands_are_accepted_as_shown(tmp_path, monkeypatch, capsys):
    """Each shown ``amc search/train/finetune/bench/fidelity`` line resolves its options (``--print-config``):
    no flag, choice or value the docs show is refused (``...`` stands for options given elsewhere; ``DIR``
    for a data folder)."""
    import shlex

    from amc.cli import main

    for name in ("reference", "configs", "bench_state"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "runs" / "sens").mkdir(parents=True)  # the warm start's source: the command before it
    (tmp_path / "runs" / "sens" / "best_policy.json").write_text((ROOT / "tests/fixtures/policy_v1.json").read_text())
    monkeypatch.chdir(tmp_path)
    checked = 0
    for cmd in _shown_commands():
        argv = shlex.split(cmd.replace(" ... ", " ").replace(" DIR", " data"))[1:]
        if argv[0] not in PRINTABLE:
            continue
        assert main([*argv, "--print-config"]) == 0, cmd
        assert capsys.readouterr().out.strip(), cmd
        checked += 1
    assert checked >= 15, checked
