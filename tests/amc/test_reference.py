"""The committed reference checkpoints match what reference/README.md says about them.

Every ``reference/*.pt`` must be listed in ``reference/README.md`` with its sha256 and the test top-1
stored in the checkpoint; it must load into its model; and a checkpoint distilled or continued from
another reference must name that file's current sha256 (``meta.teacher`` / ``meta.init``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from amc.training import load_checkpoint
from amc.utils import file_sha256
from tests._paths import REFERENCE

REFERENCE = REFERENCE
CHECKPOINTS = sorted(REFERENCE.glob("*.pt"))
ROW = re.compile(r"^\|\s*`(?P<file>[\w.-]+\.pt)`.*`(?P<sha>[0-9a-f]{64})`\s*\|\s*$")


def _documented_rows() -> dict[str, re.Match]:
    """``{file name: row match}`` for every row of reference/README.md that gives a file and its sha256."""
    matches = (ROW.match(line) for line in (REFERENCE / "README.md").read_text().splitlines())
    return {m["file"]: m for m in matches if m}


def test_reference_folder_has_checkpoints() -> None:
    names = {p.name for p in CHECKPOINTS}
    assert {"lenet5-digits.pt", "resnet20-cifar10-kd-resnet56.pt", "resnet56-cifar10.pt"} <= names


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.name)
def test_reference_checkpoint_is_documented_and_loads(path: Path) -> None:
    rows = _documented_rows()
    assert path.name in rows, f"{path.name} has no row with its sha256 in reference/README.md"
    row = rows[path.name]
    assert file_sha256(path) == row["sha"], f"{path.name}: sha256 differs from reference/README.md"

    model, ckpt = load_checkpoint(path)
    test_top1 = ckpt["metrics"]["test_top1"]
    assert f"{test_top1:.2f} %" in row[0], f"{path.name}: test top-1 {test_top1:.2f} % is not the documented one"

    spec = ckpt["model_spec"]
    x = torch.zeros(2, spec["in_channels"], *spec["image_size"])
    with torch.no_grad():
        assert model(x).shape == (2, spec["num_classes"])

    for role in ("teacher", "init"):
        source = ckpt.get("meta", {}).get(role)
        if source is not None and Path(source["path"]).parent.name == "reference":
            origin = REFERENCE / Path(source["path"]).name
            assert origin.exists(), f"{path.name}: its {role} {origin.name} is not committed"
            assert source["sha256"] == file_sha256(origin), f"{path.name}: its {role} {origin.name} changed"


def test_resnet20_reference_is_above_90() -> None:
    _, ckpt = load_checkpoint(REFERENCE / "resnet20-cifar10-kd-resnet56.pt")
    assert ckpt["model_spec"]["name"] == "resnet20" and ckpt["data"]["dataset"] == "cifar10"
    assert ckpt["metrics"]["test_top1"] >= 90.0
