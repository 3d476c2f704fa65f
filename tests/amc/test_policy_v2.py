"""Policy version 2: a policy says where it came from and how it was scored, so that ``amc apply``
and ``amc finetune`` need only the policy; version-1 documents still load."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.search import SearchConfig, run_search
from amc.cli import main
from amc.compress import apply_policy
from amc.errors import AmcError
from amc.policy import VERSION, GroupDecision, LayerDecision, Policy, Scoring
from amc.training import load_checkpoint, save_checkpoint
from amc.utils import file_sha256
from envs import CompressionEnv, EnvConfig
from tests._paths import FIXTURES

FIXTURES = FIXTURES
SPEC = {"name": "lenet5", "num_classes": 10, "in_channels": 1, "image_size": [8, 8], "kwargs": {}}


def _policy() -> Policy:
    return Policy(
        model=dict(SPEC), budget={"metric": "macs", "ratio": 0.5, "target": "macs=0.5"},
        pruning={"importance": "l2", "round_to": 2, "lbound": 0.3},
        scoring=Scoring(proxy="ft:5", calibration_size=64, calibration_seed=7, eval_precision="bf16",
                        eval_batch_size=256, val_images=100),
        checkpoint={"path": "runs/lenet/pretrain/final.pt", "sha256": "0f" * 32},
        data={"dataset": "digits", "data_dir": None, "val_size": 300, "seed": 2,
              "sizes": {"train": 1137, "val": 300, "test": 360}},
        groups=[GroupDecision(["conv1", "conv2"], 0.5, 3, 6)],
        layers=[LayerDecision("conv1"), LayerDecision("conv2")],
        accuracy={"base_val_top1": 90.0, "val_top1": 70.0}, search={"agent": "ddpg", "episode": 4, "seed": 3})


def test_v2_round_trip_keeps_every_block(tmp_path):
    pol = _policy()
    doc = json.loads(pol.to_json())
    assert doc["version"] == VERSION == 2
    assert list(doc) == ["format", "version", "model", "checkpoint", "data", "mode", "granularity", "budget",
                         "pruning", "scoring", "groups", "layers", "achieved", "accuracy", "search"]
    assert doc["scoring"] == {"proxy": "ft:5", "calibration_size": 64, "calibration_seed": 7,
                              "eval_precision": "bf16", "eval_batch_size": 256, "val_images": 100}
    assert doc["checkpoint"] == {"path": "runs/lenet/pretrain/final.pt", "sha256": "0f" * 32}
    assert doc["data"]["sizes"] == {"train": 1137, "val": 300, "test": 360}
    loaded = Policy.load(pol.save(tmp_path / "p.json"))
    assert loaded == pol and loaded.to_dict() == doc
    # a document without the optional blocks: defaults (a policy that records no origin)
    bare = Policy.from_dict({"format": "amc-policy", "version": 2, "model": {"name": "mlp"}, "groups": [],
                             "layers": []})
    assert bare.scoring == Scoring() and bare.checkpoint == {} and bare.data == {}


def test_version_1_documents_load():
    pol = Policy.load(FIXTURES / "policy_v1.json")
    assert pol.scoring == Scoring(proxy="bn", calibration_size=128, calibration_seed=1, eval_precision="bf16",
                                  eval_batch_size=None, val_images=300)
    assert pol.pruning == {"importance": "l1", "round_to": 1, "lbound": 0.2}
    assert pol.accuracy == {"base_val_top1": 91.33, "val_top1": 80.67}
    assert pol.checkpoint == {} and pol.data == {}
    assert [g.channels for g in pol.groups] == [5, 11, 54, 44]
    doc = pol.to_dict()
    assert doc["version"] == 2 and Policy.from_dict(doc) == pol
    # a version-1 policy from before the proxies: its reconstruct flag; the search seed drew the images
    old = json.loads((FIXTURES / "policy_v1.json").read_text())
    old["pruning"] = {"importance": "l1", "reconstruct": True}
    del old["accuracy"]["eval_precision"], old["accuracy"]["val_images"]
    old["search"]["seed"] = 5
    assert Policy.from_dict(old).scoring == Scoring(proxy="reconstruct", calibration_size=256, calibration_seed=5)


def _doc(**changes) -> dict:
    doc = _policy().to_dict()
    for key, value in changes.items():
        block, _, field = key.partition("__")
        if field:
            doc[block] = {**doc[block], field: value}
        else:
            doc[block] = value
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (_doc(scoring__proxy="auto"), "'scoring.proxy' is 'auto'"),
    (_doc(scoring__proxy="magic"), "unknown proxy 'magic'"),
    (_doc(scoring__eval_precision="int8"), "'scoring.eval_precision' is 'int8'; valid: fp32, bf16, fp16"),
    (_doc(scoring__calibration_size=0), "'scoring.calibration_size' is 0; it must be an integer >= 1"),
    (_doc(scoring__val_images=1.5), "'scoring.val_images' is 1.5"),
    (_doc(scoring__seed=1), "'scoring' has unknown key\\(s\\) \\['seed'\\]"),
    (_doc(scoring=[]), "'scoring' must be an object"),
    (_doc(pruning__reconstruct=True), "'pruning' holds reconstruct: since version 2 .* 'scoring'"),
    (_doc(checkpoint="final.pt"), "'checkpoint' must be an object"),
    (_doc(checkpoint={"path": 3}), "'checkpoint' must be"),
    (_doc(version=True), "field 'version' is True"),
])
def test_bad_v2_documents_name_the_field(doc, message):
    with pytest.raises(AmcError, match=message):
        Policy.from_dict(doc)


# --------------------------------------------------------------------------------------------------
# a search's policy, applied and fine-tuned from the policy alone


@pytest.fixture(scope="module")
def searched(tmp_path_factory, lenet_ckpt) -> tuple[Path, Path]:
    """A small reconstruct-scored search on digits; ``(policy path, the checkpoint it records)``."""
    root = tmp_path_factory.mktemp("v2search")
    ckpt = Path(shutil.copy(lenet_ckpt, root / "lenet.pt"))
    run_search(SearchConfig(checkpoint=str(ckpt), dataset="digits", val_size=250, data_seed=1, target="macs=0.5",
                            proxy="reconstruct", calibration_size=64, agent="random", episodes=3, warmup=3, seed=2,
                            run_dir=str(root / "search"), device="cpu", threads=1))
    return root / "search" / "best_policy.json", ckpt


def _moved(tmp_path: Path, searched: tuple[Path, Path]) -> tuple[Path, Path]:
    """A copy of the searched policy recording a copy of its checkpoint (this test's to move or change)."""
    path, ckpt = searched
    doc = json.loads(path.read_text())
    mine = Path(shutil.copy(ckpt, tmp_path / "base.pt"))
    doc["checkpoint"]["path"] = str(mine)
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    return tmp_path / "policy.json", mine


def test_a_search_policy_records_its_origin(searched, digits):
    path, ckpt = searched
    pol = Policy.load(path)
    assert pol.checkpoint == {"path": str(ckpt), "sha256": file_sha256(ckpt)}
    assert pol.data == {"dataset": "digits", "data_dir": None, "val_size": 250, "seed": 1,
                        "sizes": {"train": 1187, "val": 250, "test": 360}}
    assert pol.scoring == Scoring(proxy="reconstruct", calibration_size=64, calibration_seed=0, eval_precision="fp32",
                                  eval_batch_size=512, val_images=250)
    assert pol.model == load_checkpoint(ckpt)[1]["model_spec"] and pol.search["seed"] == 2


def test_apply_with_only_the_policy_reproduces_the_search(searched, tmp_path, capsys):
    path, _ = searched
    recorded = Policy.load(path).accuracy["val_top1"]
    assert main(["apply", "--policy", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "apply_summary.json").read_text())
    assert summary["accuracy"]["val_top1"] == recorded and summary["accuracy"]["matches_search"] is True
    assert summary["differences_from_search"] == [] and summary["data"]["seed"] == 1
    # the policy apply writes records the same origin: it applies alone again
    assert Policy.load(tmp_path / "out" / "policy.json").checkpoint == Policy.load(path).checkpoint


def test_a_moved_or_changed_checkpoint_is_one_error_line(searched, tmp_path, capsys):
    pol, ckpt = _moved(tmp_path, searched)
    gone = ckpt.rename(tmp_path / "elsewhere.pt")
    assert main(["apply", "--policy", str(pol), "--out", str(tmp_path / "a"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the policy's checkpoint") and "not there" in err[0]
    assert "pass --checkpoint" in err[0]
    # pointed at it, the same bytes reproduce the search
    assert main(["apply", "--policy", str(pol), "--checkpoint", str(gone), "--out", str(tmp_path / "b"),
                 "--device", "cpu"]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    # other bytes where the policy says: refused; given explicitly, applied and named as the cause
    model, ck = load_checkpoint(gone)
    with torch.no_grad():
        model.conv1.weight.mul_(0.5)  # (no norm layer follows: the scores change)
    save_checkpoint(ckpt, model=model, model_spec=ck["model_spec"])
    assert main(["finetune", "--policy", str(pol), "--epochs", "1", "--run-dir", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has changed since the search (sha256" in err[0] and "pass --checkpoint" in err[0]
    assert not (tmp_path / "ft").exists()
    assert main(["apply", "--policy", str(pol), "--checkpoint", str(ckpt), "--out", str(tmp_path / "c"),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "c" / "apply_summary.json").read_text())
    assert summary["differences_from_search"] == ["checkpoint"] and not summary["accuracy"]["matches_search"]
    assert "not the search's checkpoint" in out


def test_finetune_with_only_the_policy(searched, tmp_path, capsys):
    path, ckpt = searched
    assert main(["finetune", "--policy", str(path), "--epochs", "1", "--steps-per-epoch", "2",
                 "--run-dir", str(tmp_path / "ft"), "--device", "cpu", "--threads", "1"]) == 0
    assert "fine-tuned 1 epoch(s)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "ft" / "finetune_summary.json").read_text())
    assert summary["checkpoint"] == str(ckpt) and summary["data"]["val_size"] == 250
    assert summary["before"]["val_top1"] == Policy.load(path).accuracy["val_top1"]  # the search's model
    assert (tmp_path / "ft" / "model.amc").is_file()


def _tampered(tmp_path: Path, searched: tuple[Path, Path], **scoring) -> Path:
    """The searched policy claiming a val top-1 half a point off, scored as ``scoring`` says."""
    doc = json.loads(searched[0].read_text())
    doc["accuracy"]["val_top1"] += 0.5
    doc["scoring"].update(scoring)
    out = tmp_path / f"tampered-{len(list(tmp_path.glob('tampered-*')))}.json"
    out.write_text(json.dumps(doc))
    return out


def _verdict(capsys) -> str:
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("the search recorded"))


def test_the_verdict_names_only_what_the_records_show(searched, tmp_path, capsys):
    # scored in bf16 with the recorded checkpoint and data: never "another checkpoint, dataset or val holdout"
    pol = _tampered(tmp_path, searched, eval_precision="bf16")
    assert main(["apply", "--policy", str(pol), "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    line = _verdict(capsys)
    assert "differs" in line and "bf16 autocast rounds differently" in line and "in bf16" in line
    assert "another checkpoint" not in line
    # fp32, everything as recorded
    pol = _tampered(tmp_path, searched)
    assert main(["apply", "--policy", str(pol), "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert "with the checkpoint, data and precision the policy records" in _verdict(capsys)
    # a version-1 policy records no origin: the cause is a question
    doc = copy.deepcopy(json.loads(pol.read_text()))
    v1 = {**{k: v for k, v in doc.items() if k not in ("checkpoint", "data", "scoring")}, "version": 1,
          "pruning": {**doc["pruning"], "proxy": "reconstruct", "calibration_size": 64, "calibration_seed": 0}}
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    assert main(["apply", "--policy", str(tmp_path / "v1.json"), "--checkpoint", str(searched[1]), "--dataset",
                 "digits", "--val-size", "250", "--data-seed", "1", "--out", str(tmp_path / "c"),
                 "--device", "cpu"]) == 0
    assert "another checkpoint, dataset or val holdout than the search's?" in _verdict(capsys)
    # ... and its bf16 score is not blamed on them either
    v1["accuracy"]["eval_precision"] = "bf16"
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    assert main(["apply", "--policy", str(tmp_path / "v1.json"), "--checkpoint", str(searched[1]), "--dataset",
                 "digits", "--val-size", "250", "--data-seed", "1", "--out", str(tmp_path / "c"), "--overwrite",
                 "--device", "cpu"]) == 0
    line = _verdict(capsys)
    assert "bf16 autocast" in line and "another checkpoint" not in line


def test_apply_policy_with_splits_builds_the_env_model(lenet_ckpt, digits):
    """One pipeline: ``apply_policy(model, policy, splits=...)`` draws what the env drew and scores alike."""
    model, _ = load_checkpoint(lenet_ckpt)
    env = CompressionEnv(model, digits, EnvConfig(mode="joint", target="bitops=0.1", proxy="reconstruct",
                                                  calibration_size=48, calibration_seed=4))
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(rng.random(1).astype(np.float32))
    pol = Policy.from_dict(info["policy"].to_dict())
    assert pol.scoring.calibration_seed == 4 and pol.has_bits
    rebuilt = apply_policy(model, pol, splits=digits)
    assert env.evaluate(rebuilt) == info["metrics"]["accuracy"]
    with pytest.raises(AmcError, match="splits .* or the images, not both"):
        apply_policy(model, pol, splits=digits, calibration=env.calibration)
