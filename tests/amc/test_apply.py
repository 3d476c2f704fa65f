"""``amc apply``: the applied model reproduces what the search recorded, exactly; transfer; errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import amc
from agents.search import SearchConfig, run_search
from amc.cli import main
from amc.data import DatasetSplits
from amc.finetune import prepare
from amc.models import ModelSpec, build_model
from amc.training import evaluate, save_checkpoint


def _search(run_dir: Path, ckpt: Path, **kw) -> dict:
    cfg = SearchConfig(checkpoint=str(ckpt), dataset="digits", episodes=3, warmup=2, run_dir=str(run_dir),
                       device="cpu", **kw)
    run_search(cfg)
    return json.loads((run_dir / "best_policy.json").read_text())


@pytest.mark.parametrize("kw", [
    {"mode": "prune", "target": "macs=0.5", "reconstruct": True, "seed": 2},  # LS reconstruction, seeded samples
    {"mode": "joint", "target": "bitops=0.05", "seed": 1},  # pruning + activation calibration + bits
], ids=["prune-reconstruct", "joint"])
def test_apply_reproduces_the_search(tmp_path, lenet_ckpt, digits, kw, capsys):
    best = _search(tmp_path / "search", lenet_ckpt, **kw)
    out = tmp_path / "applied"
    assert main(["apply", "--policy", str(tmp_path / "search" / "best_policy.json"), "--out", str(out),
                 "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "reproduced exactly" in text and "MACs" in text and "cost model" in text
    summary = json.loads((out / "apply_summary.json").read_text())
    acc = summary["accuracy"]
    assert acc["val_top1"] == pytest.approx(best["accuracy"]["val_top1"], abs=1e-6)
    assert acc["matches_search"] is True and summary["transferred"] is False
    assert summary["data"]["seed"] == 0 and summary["checkpoint"] == str(lenet_ckpt)
    # the costs: cost model and direct count agree, and match what the search recorded
    costs = summary["costs"]
    for key in ("macs_ratio", "params_ratio"):
        assert costs["direct"][key] == pytest.approx(costs["cost_model"][key])
        assert costs["cost_model"][key] == pytest.approx(best["achieved"][key])
    if kw["mode"] == "joint":
        assert costs["cost_model"]["bitops_ratio"] == pytest.approx(best["achieved"]["bitops_ratio"])
        assert costs["cost_model"]["bitops_ratio"] <= 0.05 + 1e-9
        assert costs["quantized_layers"] > 0
    # the saved model is that model, without the run directory
    model = amc.load(out / "model.amc")
    assert evaluate(model, digits.tensors("val")) == pytest.approx(acc["val_top1"], abs=1e-9)
    assert json.loads((out / "policy.json").read_text())["groups"] == best["groups"]
    assert json.loads((out / "policy.json").read_text())["model"]["name"] == "lenet5"  # completed spec


@pytest.fixture(scope="module")
def r20_ckpt(tmp_path_factory, digits) -> Path:
    """A ResNet-20 (BatchNorm) trained one epoch on digits."""
    from amc.training import TrainConfig, train

    torch.manual_seed(0)
    spec = ModelSpec.for_data("resnet20", digits)
    run = tmp_path_factory.mktemp("r20")
    train(build_model(spec), digits, TrainConfig(epochs=1, lr=0.05, batch_size=64, device="cpu", num_threads=1,
                                                 eval_test=False), run_dir=run, model_spec=spec)
    return run / "final.pt"


@pytest.mark.parametrize("kw", [{"proxy": "bn", "eval_precision": "bf16"}, {"proxy": "ft:3"}], ids=["bn-bf16", "ft"])
def test_apply_reproduces_a_proxy_scored_search(tmp_path, r20_ckpt, kw, capsys):
    best = _search(tmp_path / "search", r20_ckpt, target="macs=0.5", seed=1, **kw)
    assert best["scoring"]["proxy"] == kw["proxy"]
    assert best["scoring"]["eval_precision"] == kw.get("eval_precision", "fp32")
    out = tmp_path / "applied"
    assert main(["apply", "--policy", str(tmp_path / "search" / "best_policy.json"), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    acc = json.loads((out / "apply_summary.json").read_text())["accuracy"]
    assert acc["matches_search"] is True


def test_apply_without_the_run_directory_needs_the_same_data(tmp_path, lenet_ckpt):
    best = _search(tmp_path / "search", lenet_ckpt, mode="prune", target="macs=0.6", reconstruct=True, seed=4)
    lone = tmp_path / "elsewhere" / "policy.json"
    lone.parent.mkdir()
    shutil.copy(tmp_path / "search" / "best_policy.json", lone)
    out = tmp_path / "applied"
    assert main(["apply", "--policy", str(lone), "--checkpoint", str(lenet_ckpt), "--dataset", "digits",
                 "--model", "lenet5", "--out", str(out), "--device", "cpu"]) == 0
    acc = json.loads((out / "apply_summary.json").read_text())["accuracy"]
    assert acc["matches_search"] and acc["val_top1"] == pytest.approx(best["accuracy"]["val_top1"], abs=1e-6)


def test_apply_transfers_to_a_deeper_sibling(tmp_path, digits):
    torch.manual_seed(0)
    ckpts = {}
    for name in ("resnet20", "resnet32"):
        spec = ModelSpec.for_data(name, digits)
        ckpts[name] = save_checkpoint(tmp_path / f"{name}.pt", model=build_model(spec).eval(), model_spec=spec,
                                      data={"dataset": "digits"})
    policy_file = _r20_policy(tmp_path, ckpts["resnet20"], digits)
    setup = prepare(policy_file, checkpoint=ckpts["resnet32"], dataset="digits", device="cpu")
    assert setup.transferred and setup.policy.search["transfer"]["method"] == "depth"
    out = tmp_path / "applied"
    assert main(["apply", "--policy", str(policy_file), "--checkpoint", str(ckpts["resnet32"]),
                 "--dataset", "digits", "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "apply_summary.json").read_text())
    assert summary["transferred"] and summary["transfer"]["stages"] == "spatial"
    assert summary["costs"]["direct"]["macs_ratio"] <= 0.5 + 1e-9  # the budget holds on resnet32
    assert "search_val_top1" not in summary["accuracy"]  # the source's accuracy is not compared
    assert len(json.loads((out / "policy.json").read_text())["groups"]) == 18


def _r20_policy(tmp_path: Path, ckpt: Path, digits: DatasetSplits) -> Path:
    """A resnet20 policy keeping 70% of every group, with a 50% MACs budget."""
    setup = prepare(_uniform(ckpt, digits), checkpoint=ckpt, dataset="digits", device="cpu")
    path = tmp_path / "r20_policy.json"
    setup.policy.save(path)
    return path


def _uniform(ckpt: Path, digits: DatasetSplits):
    from amc.cost import kept_channels
    from amc.graph import LayerGraph
    from amc.policy import GroupDecision, LayerDecision, Policy
    from amc.training import load_checkpoint

    model, ck = load_checkpoint(ckpt)
    g = LayerGraph.build(model, digits.tensors("val", limit=1)[0])
    groups = [GroupDecision(gr.layers, kept_channels(0.7, gr.channels) / gr.channels, kept_channels(0.7, gr.channels),
                            gr.channels) for gr in g.groups]
    return Policy(model=ck["model_spec"], groups=groups, layers=[LayerDecision(ly.name, ly.kind) for ly in g.layers],
                  budget={"metric": "macs", "ratio": 0.5, "target": "macs=0.5"}, pruning={"lbound": 0.2})


def test_apply_errors(tmp_path, lenet_ckpt, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["apply", "--policy", str(bad), "--checkpoint", str(lenet_ckpt), "--dataset", "digits",
                 "--out", str(tmp_path / "o")]) == 2
    assert "policy is not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"format": "amc-policy", "version": 7, "model": {}, "groups": [], "layers": []}))
    assert main(["apply", "--policy", str(bad), "--checkpoint", str(lenet_ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "field 'version' is 7" in capsys.readouterr().err
    _search(tmp_path / "s", lenet_ckpt, mode="prune", target="macs=0.5", seed=0)
    pol = str(tmp_path / "s" / "best_policy.json")
    # (amc export builds the same model from the policy; no dataset needed without reconstruction)
    assert main(["export", "--policy", pol, "--checkpoint", str(lenet_ckpt), "--out", str(tmp_path / "e.amc"),
                 "--device", "cpu"]) == 0
    assert "e.amc" in capsys.readouterr().out
    setup = prepare(pol, device="cpu")
    x = setup.splits.tensors("val")[0]
    with torch.no_grad():
        assert torch.equal(amc.load(tmp_path / "e.amc")(x), setup.compress()(x))
    assert main(["apply", "--policy", pol, "--model", "resnet20", "--out", str(tmp_path / "o")]) == 2
    assert "holds a 'lenet5' model, not 'resnet20'" in capsys.readouterr().err
    assert main(["apply", "--policy", pol, "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    # a policy of another family: transfer is attempted and says why it cannot map it
    spec = ModelSpec("mlp", num_classes=10, in_channels=1, image_size=(8, 8))
    mlp = save_checkpoint(tmp_path / "mlp.pt", model=build_model(spec), model_spec=spec)
    assert main(["apply", "--policy", pol, "--checkpoint", str(mlp), "--dataset", "digits",
                 "--out", str(tmp_path / "o")]) == 2
    assert "cannot transfer the policy" in capsys.readouterr().err
