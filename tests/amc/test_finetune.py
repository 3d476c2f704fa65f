"""Fine-tuning: KD recovers a heavily pruned model, QAT keeps it quantized, iterative schedule, resume,
and ``amc finetune``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import amc
from amc.cli import main
from amc.cost import kept_channels
from amc.data import DatasetSplits
from amc.errors import AmcError
from amc.finetune import FinetuneConfig, finetune, finetune_policy, iterative_schedule, prepare
from amc.policy import GroupDecision, LayerDecision, Policy
from amc.quantization import quantized_layers
from amc.training import evaluate, load_checkpoint

FAST = {"device": "cpu", "num_threads": 1, "batch_size": 128}


def _policy(ckpt: Path, digits: DatasetSplits, keep: float, *, w_bits: int | None = None,
            a_bits: int | None = None) -> Policy:
    """A uniform policy for the checkpoint's model (no reconstruction)."""
    from amc.graph import LayerGraph

    model, ck = load_checkpoint(ckpt)
    g = LayerGraph.build(model, digits.tensors("val", limit=1)[0])
    groups = [GroupDecision(gr.layers, kept_channels(keep, gr.channels) / gr.channels,
                            kept_channels(keep, gr.channels), gr.channels) for gr in g.groups]
    layers = [LayerDecision(ly.name, ly.kind, w_bits, a_bits) for ly in g.layers]
    return Policy(model=ck["model_spec"], mode="joint" if w_bits else "prune", groups=groups, layers=layers,
                  pruning={"importance": "l1", "lbound": 0.2})


def test_iterative_schedule_ends_at_the_policy():
    pol = Policy(model={"name": "x"}, groups=[GroupDecision(["a"], 0.5, 8, 16), GroupDecision(["b"], 0.25, 30, 120)])
    assert iterative_schedule(pol, 1) == [[8, 30]]
    # step k keeps 1 - (1 - r) k / K of the channels: 16 -> 14, 12, 10, 8 and 120 -> 98, 75, 53, 30
    assert iterative_schedule(pol, 4) == [[14, 98], [12, 75], [10, 53], [8, 30]]
    with pytest.raises(AmcError, match="steps must be >= 1"):
        iterative_schedule(pol, 0)


@pytest.mark.parametrize(("kw", "message"), [({"iterative": 0}, "iterative=0: Input should be greater than or equal to 1"),
                                             ({"kd_alpha": 1.5}, "alpha"), ({"kd_temperature": 0}, "temperature"),
                                             ({"epochs": 0}, "epochs"), ({"lr": -1}, "lr")])
def test_config_checks_itself(kw, message):
    with pytest.raises(AmcError, match=message):
        FinetuneConfig(**kw)
    assert FinetuneConfig(kd=False, kd_alpha=2.0).kd is False  # KD options unused without KD


def test_kd_finetune_recovers_a_heavily_pruned_model(tmp_path, lenet_ckpt, digits):
    setup = prepare(_policy(lenet_ckpt, digits, 0.25), checkpoint=lenet_ckpt, dataset="digits", device="cpu")
    res = finetune_policy(setup, FinetuneConfig(epochs=2, **FAST), run_dir=tmp_path / "ft")
    s = res.summary
    assert s["uncompressed"]["val_top1"] > 85
    assert s["before"]["val_top1"] < 60  # 25% of the channels, no reconstruction
    assert s["after"]["val_top1"] > s["before"]["val_top1"] + 10
    assert s["finetune"]["kd"] is True and s["costs"]["direct"]["macs_ratio"] < 0.15
    # the run directory: training files, policy, summary, exported model
    for name in ("last.pt", "final.pt", "policy.json", "finetune_summary.json", "model.amc"):
        assert (tmp_path / "ft" / name).is_file()
    loaded = amc.load(s["model_file"])
    assert evaluate(loaded, digits.tensors("val")) == pytest.approx(s["after"]["val_top1"])
    config = torch.load(tmp_path / "ft" / "final.pt", weights_only=False)["config"]
    assert config["distillation"] == {"temperature": 4.0, "alpha": 0.9}


def test_qat_keeps_the_model_quantized(tmp_path, lenet_ckpt, digits):
    setup = prepare(_policy(lenet_ckpt, digits, 0.6, w_bits=3, a_bits=4), checkpoint=lenet_ckpt, dataset="digits",
                    device="cpu")
    assert setup.quant_calibration is not None
    res = finetune_policy(setup, FinetuneConfig(epochs=1, kd=False, **FAST), run_dir=tmp_path / "qat")
    wrappers = quantized_layers(res.model)
    assert len(wrappers) == 5 and all(w.w_bits == 3 and w.a_bits == 4 for w in wrappers.values())
    # the weights moved (QAT through the straight-through estimator) and stay on the 3-bit grid
    before = quantized_layers(setup.compress())
    assert not torch.equal(wrappers["fc1"].module.weight, before["fc1"].module.weight)
    codes = wrappers["fc1"].quantized_weight().codes
    assert int(codes.max()) < 2**3
    loaded = amc.load(res.summary["model_file"])
    x = digits.tensors("val")[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model.eval()(x))
    assert res.summary["costs"]["cost_model"]["size_ratio"] < 0.1


def test_sparse_weights_stay_zero(tmp_path, lenet_ckpt, digits):
    pol = _policy(lenet_ckpt, digits, 1.0)
    doc = pol.to_dict()
    doc.update(granularity="fine", groups=[])
    for ly in doc["layers"]:
        ly["sparsity"] = 0.8
    setup = prepare(Policy.from_dict(doc), checkpoint=lenet_ckpt, dataset="digits", device="cpu")
    res = finetune_policy(setup, FinetuneConfig(epochs=1, **FAST), run_dir=tmp_path / "sp")
    for name in ("conv2", "fc1", "fc2"):
        w = res.model.get_submodule(name).weight
        assert float((w == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
        assert not hasattr(res.model.get_submodule(name), "weight_mask")  # masks made permanent
    assert res.summary["after"]["val_top1"] > res.summary["before"]["val_top1"]
    assert res.summary["costs"]["direct"]["nonzero_weights"] < 0.25 * res.summary["costs"]["direct"]["params"]


def test_resume_continues_the_training(tmp_path, lenet_ckpt, digits):
    setup = prepare(_policy(lenet_ckpt, digits, 0.4), checkpoint=lenet_ckpt, dataset="digits", device="cpu")
    finetune_policy(setup, FinetuneConfig(epochs=1, **FAST), run_dir=tmp_path / "r", export_name=None)
    first = torch.load(tmp_path / "r" / "last.pt", weights_only=False)["train_state"]["history"]
    res = finetune_policy(setup, FinetuneConfig(epochs=2, **FAST), run_dir=tmp_path / "r", resume=True)
    hist = torch.load(tmp_path / "r" / "final.pt", weights_only=False)["history"]
    assert len(hist) == 2 and hist[0] == first[0]  # epoch 1 was not trained again
    assert res.summary["steps"][0]["train_time_s"] == pytest.approx(hist[0]["time_s"] + hist[1]["time_s"])


def test_iterative_pruning_reaches_the_policy_and_resumes(tmp_path, lenet_ckpt, digits):
    pol = _policy(lenet_ckpt, digits, 0.3)
    setup = prepare(pol, checkpoint=lenet_ckpt, dataset="digits", device="cpu")
    res = finetune_policy(setup, FinetuneConfig(epochs=1, iterative=3, **FAST), run_dir=tmp_path / "it")
    steps = res.summary["steps"]
    assert [s["channels"] for s in steps] == iterative_schedule(pol, 3)
    assert steps[-1]["channels"] == [g.channels for g in pol.groups]
    assert all((tmp_path / "it" / f"step{k}" / "final.pt").is_file() for k in (1, 2, 3))
    # the final structure is the policy's: same parameter count as the one-shot model
    assert sum(p.numel() for p in res.model.parameters()) == sum(p.numel() for p in setup.compress().parameters())
    again = finetune_policy(setup, FinetuneConfig(epochs=1, iterative=3, **FAST), run_dir=tmp_path / "it", resume=True)
    assert all(s.get("resumed") for s in again.summary["steps"])
    assert again.summary["after"] == res.summary["after"]


def test_finetune_needs_a_teacher_for_kd(lenet_ckpt, digits, tmp_path):
    model, _ = load_checkpoint(lenet_ckpt)
    with pytest.raises(AmcError, match="needs the uncompressed teacher"):
        finetune(model, digits, FinetuneConfig(epochs=1, **FAST), run_dir=tmp_path)


def test_finetune_cli_from_an_applied_model_file(tmp_path, lenet_ckpt, digits, capsys):
    pol_path = _policy(lenet_ckpt, digits, 0.3).save(tmp_path / "policy.json")
    assert main(["apply", "--policy", str(pol_path), "--checkpoint", str(lenet_ckpt), "--dataset", "digits",
                 "--out", str(tmp_path / "applied"), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--model-file", str(tmp_path / "applied" / "model.amc"), "--checkpoint",
                 str(lenet_ckpt), "--dataset", "digits", "--epochs", "1", "--run-dir", str(tmp_path / "ft"),
                 "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "with KD (T=4, alpha=0.9)" in out and "before FT" in out and "model.amc" in out
    summary = json.loads((tmp_path / "ft" / "finetune_summary.json").read_text())
    applied = json.loads((tmp_path / "applied" / "apply_summary.json").read_text())
    assert summary["before"]["val_top1"] == applied["accuracy"]["val_top1"]
    assert main(["finetune", "--model-file", str(tmp_path / "applied" / "model.amc"), "--dataset", "digits",
                 "--epochs", "1", "--run-dir", str(tmp_path / "ft2"), "--iterative", "2",
                 "--checkpoint", str(lenet_ckpt)]) == 2
    assert "cannot be pruned iteratively" in capsys.readouterr().err
    # the policy.json apply wrote records the checkpoint and data it was applied with: it applies alone
    assert main(["finetune", "--policy", str(tmp_path / "applied" / "policy.json"), "--epochs", "1",
                 "--no-kd", "--run-dir", str(tmp_path / "ft3"), "--device", "cpu"]) == 0
    again = json.loads((tmp_path / "ft3" / "finetune_summary.json").read_text())
    assert again["checkpoint"] == str(lenet_ckpt) and again["before"] == summary["before"]
    assert again["finetune"]["kd"] is False
