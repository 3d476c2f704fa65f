"""amc fidelity: the rank statistics, and a whole (tiny) study: files, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from amc.cli import build_parser, main
from amc.errors import AmcError
from benchmarks.fidelity import ADDED_KEYS, DEFAULT_PROXIES, FidelityConfig, rank_stats, run_fidelity
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


def test_processes_share_a_study(tmp_path, monkeypatch):
    """A second worker waits while the study is sampled and scored, fine-tunes only the policies no other
    process holds, and waits for those before it writes the report."""
    import threading

    import benchmarks.fidelity as fidelity
    from amc.rundir import RunDirLock

    monkeypatch.setattr(fidelity, "POLL_S", 0.05)
    out = tmp_path / "fid"
    study, p01 = RunDirLock(out).acquire(), RunDirLock(out / "finetune" / "p01").acquire()  # "other processes"
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(run_fidelity(_cfg(policies=3), out, resume=True)))
    worker.start()
    worker.join(1.0)
    assert worker.is_alive() and not (out / "policies.json").exists()  # waits for the scoring process
    study.release()
    for _ in range(600):  # every policy but the held one is fine-tuned, then the worker waits for it
        if all((out / "finetune" / p / "metrics.json").is_file() for p in ("p00", "p02")):
            break
        worker.join(0.1)
    worker.join(0.5)
    assert worker.is_alive() and not (out / "finetune" / "p01" / "metrics.json").exists()
    p01.release()  # the holder went away without finishing: the worker fine-tunes p01 itself
    worker.join(120)
    assert not worker.is_alive() and len(done["analysis"]["policies"]) == 3
    assert (out / "finetune" / "p01" / "metrics.json").is_file() and (out / "fidelity.json").is_file()


def test_a_joint_study_scores_ptq_and_finetunes_with_qat(tmp_path):
    """--mode joint: policies choose channels and bits under a BitOps budget; the scores are the fake-quantized
    models' accuracies and the fine-tune trains them quantization-aware."""
    out = tmp_path / "joint"
    doc = run_fidelity(_cfg(mode="joint", target="bitops=0.1", policies=3, proxies=["vanilla"], val_sizes=[]), out)
    pols = json.loads((out / "policies.json").read_text())["policies"]
    assert len(pols) == 3 and all(p["achieved"]["bitops_ratio"] <= 0.1 + 1e-9 for p in pols)
    assert all(any(ly["w_bits"] is not None and ly["w_bits"] < 32 for ly in p["policy"]["layers"]) for p in pols)
    assert all(0 < p["ft_val_top1"] <= 100 for p in doc["analysis"]["policies"])
    assert "mode joint" in (out / "fidelity.md").read_text()
    ckpt = torch.load(out / "finetune" / "p01" / "final.pt", map_location="cpu", weights_only=False)
    assert any("quant" in type(m).__name__.lower() for m in ckpt["module"].modules())  # trained fake-quantized


def test_bad_settings_are_refused(tmp_path, capsys):
    with pytest.raises(AmcError, match="at least 2 policies"):
        _cfg(policies=1)
    with pytest.raises(AmcError, match="not auto"):
        _cfg(proxies=["auto"])
    with pytest.raises(AmcError, match="--mode prune samples policies under a macs= or params= budget"):
        _cfg(target="bitops=0.1")
    with pytest.raises(AmcError, match="--mode quant samples policies under a size= or bitops= budget"):
        _cfg(mode="quant", target="macs=0.5")
    with pytest.raises(AmcError, match="w_bits"):
        _cfg(mode="quant", target="bitops=0.1", w_bits=(0, 9))
    assert main(["fidelity", "--checkpoint", LENET, "--proxies", "bogus", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: fidelity config: score.proxies=")
    assert "unknown proxy 'bogus'" in err
    assert main(["fidelity", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()  # nothing written before the inputs check out


#: the README's and docs/results.md's command (docs/bench/fidelity-r20), every everyday flag of amc fidelity
README_ARGV = ["fidelity", "--checkpoint", "reference/resnet20-cifar10-kd-resnet56.pt", "--dataset", "cifar10",
               "--data-dir", "data", "--val-size", "5000", "--target", "macs=0.5", "--policies", "24", "--epochs", "1",
               "--proxies", "vanilla,bn,reconstruct,reconstruct+bn,ft:20", "--calibration-sizes", "32,64,128,512,1024",
               "--val-sizes", "500,1000,2000", "--eval-precisions", "bf16", "--ft-precision", "bf16",
               "--ft-channels-last", "--threads", "1", "--out", "bench_out/fidelity-r20"]
STUDY = Path(__file__).resolve().parents[2] / "docs" / "bench" / "fidelity-r20" / "fidelity.json"


class _Resumed(Exception):
    pass


def test_an_existing_study_still_resumes(tmp_path, monkeypatch):
    """The published study's config (the README's command): its keys and values are what FidelityConfig writes."""
    import benchmarks.fidelity as fidelity
    from amc.cli.fidelity import config_from_args

    def resumed(*args, **kwargs):
        raise _Resumed

    monkeypatch.setattr(fidelity, "_Study", resumed)

    old = json.loads(STUDY.read_text())["config"]
    assert FidelityConfig(**old).to_dict() == {**ADDED_KEYS, **old}  # keys added since, at the study's values
    assert config_from_args(build_parser().parse_args(README_ARGV)).to_dict() == {**ADDED_KEYS, **old}
    out = tmp_path / "study"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(old))
    # the settings compare equal, so the resume goes on (to the study, stubbed here)
    with pytest.raises(_Resumed):
        run_fidelity(FidelityConfig(**old), out, resume=True)
    with pytest.raises(AmcError, match="other settings \\(policies\\)"):
        run_fidelity(FidelityConfig(**{**old, "policies": 16}), out, resume=True)


def test_defaults_and_flags_as_before():
    cfg = FidelityConfig(checkpoint="x.pt")
    assert (cfg.dataset, cfg.target, cfg.lbound, cfg.round_to, cfg.importance, cfg.policies, cfg.budget_band) == (
        "digits", "macs=0.5", 0.2, 1, "l1", 16, 0.0)
    assert (cfg.proxies, cfg.calibration_size, cfg.calibration_seed, cfg.runs, cfg.val_sizes) == (
        list(DEFAULT_PROXIES), 256, 0, [], [])
    assert (cfg.epochs, cfg.ft_lr, cfg.ft_batch_size, cfg.kd_temperature, cfg.kd_alpha, cfg.ft_precision) == (
        1, 0.01, 128, 4.0, 0.9, "fp32")
    assert (cfg.ft_channels_last, cfg.ft_test, cfg.seed, cfg.device, cfg.threads) == (False, True, 0, "cpu", None)
    from amc.cli.fidelity import config_from_args

    args = build_parser().parse_args(["fidelity", "--checkpoint", "x.pt", "--lr", "0.05", "--batch-size", "64",
                                      "--no-test", "--runs", "a", "b", "--budget-band", "0.02", "--lbound", "0.3",
                                      "--round-to", "8", "--seed", "3", "--device", "cpu", "--calibration-size", "128",
                                      "--proxies", "bn", "ft:5", "--resume", "--out", "o"])
    cfg = config_from_args(args)
    assert (cfg.ft_lr, cfg.ft_batch_size, cfg.ft_test, cfg.runs, cfg.budget_band, cfg.lbound, cfg.round_to) == (
        0.05, 64, False, ["a", "b"], 0.02, 0.3, 8)
    assert (cfg.seed, cfg.calibration_size, cfg.proxies, args.resume, args.out) == (3, 128, ["bn", "ft:5"], True, "o")


def test_print_config_round_trips(tmp_path, capsys):
    argv = [*README_ARGV, "--kd-alpha", "0.5", "--env.importance", "l2", "--score.calibration-seed", "1", "--no-test"]
    assert main([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert data["finetune"]["kd_alpha"] == 0.5 and data["env"]["importance"] == "l2"
    assert data["score"]["calibration_sizes"] == [32, 64, 128, 512, 1024] and data["finetune"]["ft_test"] is False
    (tmp_path / "f.yaml").write_text(printed)
    assert main(["fidelity", "--config", str(tmp_path / "f.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    # a flat file reads too, and the command line overrides it
    (tmp_path / "flat.yaml").write_text("checkpoint: x.pt\npolicies: 8\nft_lr: 0.02\n")
    assert main(["fidelity", "--config", str(tmp_path / "flat.yaml"), "--policies", "4", "--print-config"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert (data["sample"]["policies"], data["finetune"]["ft_lr"], data["data"]["checkpoint"]) == (4, 0.02, "x.pt")


@pytest.mark.parametrize(("argv", "message"), [
    (["--out", "o"], "checkpoint is required"),
    (["--checkpoint", "x.pt"], "--out is required"),
    (["--checkpoint", "x.pt", "--out", "o", "--resume", "--overwrite"], "pass one"),
    (["--checkpoint", "x.pt", "--policies", "1"], "sample.policies='1': a rank correlation needs at least 2"),
    (["--checkpoint", "x.pt", "--proxies", "vanilla,auto"], "not auto"),
    (["--checkpoint", "x.pt", "--target", "bitops=0.1"], "macs= or params="),
    (["--checkpoint", "x.pt", "--eval-precisions", "bf17"], "score.eval_precisions.0='bf17': valid: fp32, bf16"),
    (["--checkpoint", "x.pt", "--val-sizes", "500,0"], "score.val_sizes.1='0'"),
    (["--checkpoint", "x.pt", "--epochs", "0"], "finetune.epochs='0'"),
    (["--checkpoint", "x.pt", "--kd-temperature", "0"], "finetune.kd_temperature='0'"),
    (["--checkpoint", "x.pt", "--dataset", "foo"], "unknown dataset 'foo'"),
    (["--checkpoint", "x.pt", "--threads", "0"], "run.threads='0'"),
])
def test_bad_input_is_one_error_line(argv, message, capsys):
    print_config = [] if "--out" in argv or message.startswith("--out") else ["--print-config"]
    assert main(["fidelity", *argv, *print_config]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
