"""The ``amc train`` and ``amc finetune`` command lines, generated from ``amc.config.train`` (no training)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from amc.cli import build_parser, main
from amc.cli import finetune as ft_cli
from amc.cli import train as train_cli
from amc.config.train import FinetuneOptions, ShareOptions, TrainOptions
from amc.deep_compression import DeepCompressionConfig
from amc.errors import AmcError
from amc.finetune import FinetuneConfig
from amc.training import TrainConfig


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_the_models_own_the_defaults():
    assert TrainConfig().to_dict() == TrainOptions().model_dump()
    ft = FinetuneConfig()
    assert (ft.epochs, ft.lr, ft.nesterov, ft.device, ft.kd, ft.kd_temperature, ft.kd_alpha, ft.iterative) == (
        5, 0.01, True, "auto", True, 4.0, 0.9, 1)
    assert ft.to_dict() == FinetuneConfig.from_options(FinetuneOptions()).to_dict()
    assert FinetuneConfig(momentum=0).train_config().nesterov is False  # Nesterov iff momentum, as before
    dc, share = DeepCompressionConfig(), ShareOptions()
    assert (dc.share_epochs, dc.share_lr, dc.kmeans_iters, dc.huffman) == (
        share.share_epochs, share.share_lr, share.kmeans_iters, share.huffman)
    # a checkpoint's stored config loads, and a field unknown to it is refused by name
    assert TrainConfig.from_dict(TrainConfig(epochs=3, nesterov=False, momentum=0).to_dict()).epochs == 3
    with pytest.raises(AmcError, match="unknown training options"):
        TrainConfig.from_dict({"epoch": 3})
    # the command's own defaults are the library's (amc train: Nesterov iff momentum, epochs chosen later)
    opts = train_cli.resolve_options(_args("train", "--model", "mlp", "--dataset", "digits", "--momentum", "0"))
    assert opts.train.nesterov is False and opts.train.epochs is None and opts.run.run_dir == "runs/mlp-digits"
    assert TrainConfig.from_options(opts.train.model_copy(update={"epochs": 1})).momentum == 0


def test_train_print_config_round_trips(tmp_path, capsys):
    argv = ["train", "--model", "lenet5", "--dataset", "digits", "--wd", "1e-3", "--model-arg", "width_mult=0.5",
            "--image-size", "8", "--no-augment", "--threads", "1", "--train.eval-batch-size", "64",
            "--teacher", "t.pt", "--kd-alpha", "0.5"]
    assert main([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert data["train"]["weight_decay"] == 1e-3 and data["train"]["augment"] is False
    assert data["data"]["model_kwargs"] == {"width_mult": 0.5} and data["data"]["image_size"] == [8, 8]
    assert data["distill"]["teacher"] == "t.pt" and data["train"]["eval_batch_size"] == 64
    (tmp_path / "c.yaml").write_text(printed)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    # an older flat file (wd, threads, no_augment) reads as before, and the command line overrides it
    (tmp_path / "old.yaml").write_text("model: mlp\ndataset: digits\nwd: 0.01\nthreads: 2\nno_augment: true\n")
    opts = train_cli.resolve_options(_args("train", "--config", str(tmp_path / "old.yaml"), "--weight-decay", "0.02"))
    assert (opts.train.weight_decay, opts.train.num_threads, opts.train.augment) == (0.02, 2, False)
    # --model-arg adds to the file's model_kwargs, as before
    (tmp_path / "kw.yaml").write_text("model: mlp\ndataset: digits\nmodel_kwargs: {hidden: [16], act: relu}\n")
    opts = train_cli.resolve_options(_args("train", "--config", str(tmp_path / "kw.yaml"), "--model-arg", "hidden=[8]"))
    assert opts.data.model_kwargs == {"hidden": [8], "act": "relu"}


def test_finetune_print_config_round_trips(tmp_path, capsys):
    argv = ["finetune", "--epochs", "2", "--run-dir", "r", "--no-kd", "--iterative", "3", "--precision", "bf16",
            "--share-lr", "0.01", "--no-huffman", "--weight-decay", "1e-4"]
    assert main([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "f.yaml").write_text(printed)
    assert main(["finetune", "--config", str(tmp_path / "f.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    opts = ft_cli.resolve_options(_args("finetune", "--config", str(tmp_path / "f.yaml"), "--lr", "0.05"))
    cfg = FinetuneConfig.from_options(opts)
    assert (cfg.epochs, cfg.lr, cfg.kd, cfg.iterative, cfg.precision, cfg.weight_decay) == (
        2, 0.05, False, 3, "bf16", 1e-4)
    assert (opts.share.share_lr, opts.share.huffman, opts.run.run_dir) == (0.01, False, "r")
    assert dataclasses.replace(cfg, device="cpu").device == "cpu"
    opts = ft_cli.resolve_options(_args("finetune", "--epochs", "0", "--deep-compression", "--run-dir", "r"))
    assert opts.train.epochs == 0 and opts.share.deep_compression  # Deep Compression prunes without retraining


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--model", "mlp", "--dataset", "digits", "--lr", "0"], "train.lr='0': Input should be greater than 0"),
    (["train", "--dataset", "digits"], "--model is required"),
    (["train", "--model", "mlp", "--dataset", "digits", "--kd-alpha", "2"], "alpha"),
    (["train", "--model", "mlp", "--dataset", "digits", "--momentum", "0", "--train.nesterov"], "nesterov needs"),
    (["train", "--model", "mlp", "--dataset", "digits", "--resume", "--overwrite"], "exclude each other"),
    (["finetune", "--run-dir", "r"], "--epochs is required"),
    (["finetune", "--epochs", "1"], "--run-dir is required"),
    (["finetune", "--epochs", "0", "--run-dir", "r"], "0 only with --deep-compression"),
    (["finetune", "--epochs", "1", "--run-dir", "r", "--iterative", "0"], "iterative='0'"),
    (["finetune", "--epochs", "1", "--run-dir", "r", "--kd-temperature", "0"], "temperature must be > 0"),
    (["finetune", "--epochs", "1", "--run-dir", "r", "--resume", "--overwrite"], "exclude each other"),
])
def test_bad_input_is_one_error_line(argv, message, capsys):
    assert main([*argv, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err and message in err


def test_help_shows_the_defaults_and_the_everyday_flags(capsys):
    for command, flags in (("train", ["--epochs", "--wd", "--threads", "--no-augment", "--kd-alpha", "--teacher",
                                      "--init", "--model-arg", "--resume", "--overwrite", "--cutout", "--slimming"]),
                           ("finetune", ["--epochs", "--lr", "--wd", "--no-kd", "--iterative", "--deep-compression",
                                         "--share-epochs", "--run-dir", "--policy", "--model-file"])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        for flag in flags:
            assert flag in out, (command, flag)
    assert "(default: 0.01)" in out and "(default: required)" in out
