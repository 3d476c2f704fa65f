"""Training loop, checkpoints, resume, evaluation and the train/eval CLI on digits (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import amc.training as T
from amc.cli import main
from amc.data import DatasetSplits
from amc.errors import AmcError
from amc.models import ModelSpec, build_model
from amc.training import TrainConfig, evaluate, load_checkpoint, save_checkpoint, train
from amc.utils import file_sha256

FAST = {"batch_size": 32, "lr": 0.1, "device": "cpu", "num_threads": 1, "eval_batch_size": 500}


def _mlp(digits: DatasetSplits, **kw: object) -> tuple[nn.Module, ModelSpec]:
    spec = ModelSpec.for_data("mlp", digits, kwargs={"hidden": [32, 32], **kw})
    return build_model(spec), spec


def test_train_learns_and_writes_run_dir(digits: DatasetSplits, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, spec = _mlp(digits)
    res = train(model, digits, TrainConfig(epochs=3, **FAST), run_dir=tmp_path, model_spec=spec)
    assert res["test_top1"] > 70.0 and res["val_top1"] > 70.0  # chance is 10 %
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3]
    assert res["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine ends at lr_min
    for name in ("last.pt", "final.pt", "config.json", "metrics.json"):
        assert (tmp_path / name).is_file()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "config.json").read_text())["model_spec"]["name"] == "mlp"
    loaded, ckpt = load_checkpoint(tmp_path / "final.pt")
    assert "module" not in ckpt and ckpt["format"] == "amc-checkpoint" and ckpt["version"] == 1
    assert ckpt["metrics"]["test_top1"] == pytest.approx(res["test_top1"])
    assert ckpt["config"]["epochs"] == 3 and ckpt["data"]["dataset"] == "digits"
    x, _ = digits.tensors("test")
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert evaluate(loaded, digits.tensors("test")) == pytest.approx(res["test_top1"])
    assert evaluate(loaded, digits.loader("test", batch_size=100)) == pytest.approx(res["test_top1"])


def test_resume_after_a_kill_matches_an_uninterrupted_run(
    digits: DatasetSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TrainConfig(epochs=2, warmup_epochs=0.5, **FAST)
    torch.manual_seed(1)
    ref, spec = _mlp(digits)
    init = {k: v.clone() for k, v in ref.state_dict().items()}
    train(ref, digits, cfg, run_dir=tmp_path / "ref", model_spec=spec)

    calls = {"n": 0}
    real_evaluate = T.evaluate

    def dying_evaluate(*args: object, **kw: object) -> float:
        calls["n"] += 1
        if calls["n"] == 2:  # after epoch 2's steps, before its checkpoint
            raise KeyboardInterrupt
        return real_evaluate(*args, **kw)

    model, _ = _mlp(digits)
    model.load_state_dict(init)
    monkeypatch.setattr(T, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        train(model, digits, cfg, run_dir=tmp_path / "run", model_spec=spec)
    monkeypatch.setattr(T, "evaluate", real_evaluate)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_state"]["epoch"] == 1

    fresh, _ = _mlp(digits)  # resume overwrites the weights
    res = train(fresh, digits, cfg, run_dir=tmp_path / "run", model_spec=spec, resume=True)
    assert [h["epoch"] for h in res["history"]] == [1, 2]
    for k, v in ref.state_dict().items():
        assert torch.allclose(fresh.state_dict()[k], v, atol=1e-6), k


def test_distillation_training_runs(digits: DatasetSplits, tmp_path: Path) -> None:
    teacher, spec = _mlp(digits)
    student, _ = _mlp(digits)
    cfg = TrainConfig(epochs=1, steps_per_epoch=3, **FAST)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    res = train(student, digits, cfg, run_dir=tmp_path, teacher=teacher, kd_temperature=2.0, kd_alpha=0.5,
                model_spec=spec)
    assert len(res["history"]) == 1
    assert res["history"][0]["train_loss"] > 0
    # the teacher is not trained, and comes back as it was given: trainable (it may be pruned and
    # fine-tuned later, as amc fidelity does with one base model) and in its own mode
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters()) and teacher.training
    cl = TrainConfig(epochs=1, steps_per_epoch=2, channels_last=True, **FAST)
    conv_teacher = build_model(ModelSpec.for_data("lenet5", digits))
    train(build_model(ModelSpec.for_data("lenet5", digits)), digits, cl, run_dir=tmp_path / "cl", teacher=conv_teacher)
    assert all(p.is_contiguous() for p in conv_teacher.parameters())  # the teacher comes back in NCHW too
    assert load_checkpoint(res["checkpoint"])[1]["config"]["distillation"] == {"temperature": 2.0, "alpha": 0.5}
    with pytest.raises(AmcError, match="alpha"):
        train(student, digits, cfg, run_dir=tmp_path, teacher=teacher, kd_alpha=2.0)


def test_final_evaluation_reuses_the_last_epoch_and_test_is_optional(
    digits: DatasetSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = T.evaluate

    def counting(model, data, **kw):
        calls.append(len(data[1]))
        return real(model, data, **kw)

    monkeypatch.setattr(T, "evaluate", counting)
    model, spec = _mlp(digits)
    res = train(model, digits, TrainConfig(epochs=2, steps_per_epoch=2, **FAST), run_dir=tmp_path / "a",
                model_spec=spec)
    n_val, n_test = len(digits.val), len(digits.test)
    assert calls == [n_val, n_val, n_test]  # one val pass per epoch, none again at the end, then test
    assert res["val_top1"] == res["history"][-1]["val_top1"]
    calls.clear()
    res = train(model, digits, TrainConfig(epochs=1, steps_per_epoch=2, eval_test=False, eval_precision="bf16",
                                           **FAST), run_dir=tmp_path / "b", model_spec=spec)
    assert calls == [n_val] and res["test_top1"] is None
    with pytest.raises(AmcError, match="eval_precision"):
        TrainConfig(eval_precision="int4")


def test_bf16_channels_last_training_learns_and_returns_a_plain_model(
    digits: DatasetSplits, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    spec = ModelSpec.for_data("lenet5", digits)
    model = build_model(spec)
    cfg = TrainConfig(epochs=3, precision="bf16", channels_last=True, **FAST)
    res = train(model, digits, cfg, run_dir=tmp_path, model_spec=spec)
    assert res["test_top1"] > 60.0  # chance is 10 %: autocast really trains
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.dtype == torch.float32 and conv.weight.is_contiguous()  # weights stay fp32, NCHW
    loaded, ckpt = load_checkpoint(res["checkpoint"])
    assert ckpt["config"]["precision"] == "bf16" and ckpt["config"]["channels_last"] is True
    x = digits.tensors("test")[0]
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_precision_is_checked_against_the_device(digits: DatasetSplits, tmp_path: Path) -> None:
    from typing import get_args

    from amc.config.train import Precision

    assert get_args(Precision) == tuple(T.PRECISIONS)  # the CLI offers exactly what training accepts
    with pytest.raises(AmcError, match="precision=.int8.: valid: fp32, bf16, fp16"):
        TrainConfig(precision="int8")
    model, spec = _mlp(digits)
    with pytest.raises(AmcError, match="fp16 needs a CUDA device"):
        train(model, digits, TrainConfig(epochs=1, precision="fp16", **FAST), run_dir=tmp_path, model_spec=spec)


def test_pruned_model_checkpoint_stores_the_module(digits: DatasetSplits, tmp_path: Path) -> None:
    model, spec = _mlp(digits)
    # "prune" fc1 from 32 to 20 outputs
    model.fc1 = nn.Linear(64, 20)
    model.fc2 = nn.Linear(20, 32)
    path = save_checkpoint(tmp_path / "p.pt", model=model, model_spec=spec, config={"note": "pruned"},
                           metrics={"test_top1": 1.0}, policy={"layers": []})
    loaded, ckpt = load_checkpoint(path)
    assert isinstance(ckpt["module"], nn.Module) and ckpt["policy"] == {"layers": []}
    x = digits.tensors("val", limit=8)[0]
    model.eval()
    assert torch.equal(loaded(x), model(x))
    # forcing a state_dict-only checkpoint of a pruned model fails loudly on load
    save_checkpoint(tmp_path / "bad.pt", model=model, model_spec=spec, store_module=False)
    with pytest.raises(AmcError, match="do not fit"):
        load_checkpoint(tmp_path / "bad.pt")


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(AmcError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AmcError, match="corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(AmcError, match="not an amc checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_train_config_validates() -> None:
    assert TrainConfig.from_dict(TrainConfig(epochs=3).to_dict()) == TrainConfig(epochs=3)
    for bad in ({"epochs": 0}, {"lr": 0}, {"momentum": 0.0}, {"label_smoothing": 1.0}, {"schedule": "step"},
                {"warmup_epochs": 20}, {"num_threads": 0}, {"cutout": -1}, {"cutout": True}):
        with pytest.raises(AmcError):
            TrainConfig(**bad)
    with pytest.raises(AmcError, match="unknown training options"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(AmcError, match="no samples"):
        evaluate(nn.Linear(2, 2), (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


def test_cli_train_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mlp\nmodel_kwargs: {hidden: [16]}\nbatch_size: 64\nthreads: 1\n")
    run_dir = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--dataset", "digits", "--epochs", "1", "--device", "cpu",
               "--cutout", "2", "--run-dir", str(run_dir)])
    out = capsys.readouterr().out
    assert rc == 0 and "test top-1" in out and str(run_dir / "final.pt") in out
    teacher = T.load_checkpoint(run_dir / "final.pt")[1]
    assert teacher["config"]["cutout"] == 2
    # a distilled run records which teacher it learnt from (path, sha256, accuracy)
    assert main(["train", "--config", str(cfg), "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                 "--teacher", str(run_dir / "final.pt"), "--run-dir", str(tmp_path / "kd")]) == 0
    meta = T.load_checkpoint(tmp_path / "kd" / "final.pt")[1]["meta"]["teacher"]
    assert meta["sha256"] == file_sha256(run_dir / "final.pt") and len(meta["sha256"]) == 64
    assert meta["model"] == "mlp" and meta["test_top1"] == teacher["metrics"]["test_top1"]
    # --init starts from a finished run's weights (a near-zero lr leaves them where they were)
    assert main(["train", "--config", str(cfg), "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                 "--init", str(run_dir / "final.pt"), "--lr", "1e-9", "--run-dir", str(tmp_path / "init")]) == 0
    cont = T.load_checkpoint(tmp_path / "init" / "final.pt")[1]
    for k, v in teacher["state_dict"].items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(cont["state_dict"][k], v, atol=1e-6, rtol=0)
    assert cont["meta"]["init"]["sha256"] == file_sha256(run_dir / "final.pt")
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--model-arg", "hidden=[8]", "--dataset", "digits", "--epochs", "1",
                 "--device", "cpu", "--init", str(run_dir / "final.pt"), "--run-dir", str(tmp_path / "bad")]) == 2
    assert "do not fit the model being trained" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run_dir / "final.pt"), "--split", "val", "--device", "cpu"]) == 0
    assert "on digits val (300 images)" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--model", "resnet21", "--dataset", "digits"]) == 2
    assert "valid: lenet5" in capsys.readouterr().err
    cfg.write_text("modle: mlp\n")
    assert main(["train", "--config", str(cfg), "--dataset", "digits"]) == 2
    assert "unknown option 'modle'" in capsys.readouterr().err
