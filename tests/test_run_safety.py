"""No lost work, no silent corruption (issue 17): refusals, the run-dir lock, readable errors, resume checks."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from agents import SearchConfig, read_episodes
from agents import search as search_mod
from agents.search import run_search
from amc.cli import main
from amc.errors import AmcError
from amc.rundir import LOCK_NAME, RunDirLock, refuse_existing_files
from tests._paths import ROOT
from tests._toy_env import ToyCompressionEnv

ROOT = ROOT
REF = ROOT / "reference" / "lenet5-digits.pt"


def _toy(model, splits, env_cfg, **kw):
    return ToyCompressionEnv()


@pytest.fixture
def toy_cli(monkeypatch):
    """``amc search`` with the toy env instead of CompressionEnv: the CLI's plumbing in a second."""
    import envs

    monkeypatch.setattr(envs, "CompressionEnv", _toy)


def _search(run_dir: Path, *more: str) -> list[str]:
    return ["search", "--checkpoint", str(REF), "--dataset", "digits", "--episodes", "4", "--warmup", "2",
            "--checkpoint-every", "2", "--no-progress", "--run-dir", str(run_dir), *more]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith(("INFO ", "WARNING "))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ------------------------------------------------------------------------------------- 2: the run-dir lock
def test_a_run_dir_in_use_is_refused_with_one_line(tmp_path, toy_cli, capsys):
    run_dir = tmp_path / "run"
    with RunDirLock(run_dir, command="amc search"):  # another process (an fd of its own) holds it
        assert main(_search(run_dir)) == 2
        line = _one_error_line(capsys)
        assert "in use by another amc process" in line and f"pid {os.getpid()}" in line
        assert not (run_dir / "config.yaml").exists() and not (run_dir / "episodes.csv").exists()
    assert main(_search(run_dir)) == 0  # released: the run goes ahead
    assert [r["episode"] for r in read_episodes(run_dir / "episodes.csv")] == [1, 2, 3, 4]


def test_two_searches_on_one_run_dir_at_once(tmp_path):
    """While one search runs, a second on the same run dir fails at once and writes nothing."""
    run_dir = tmp_path / "run"
    started, go_on = threading.Event(), threading.Event()
    result: dict[str, object] = {}

    def blocking_env(model, splits, env_cfg, **kw):
        started.set()
        go_on.wait(30)
        return ToyCompressionEnv()

    cfg = SearchConfig(checkpoint=str(REF), dataset="digits", episodes=3, warmup=1, device="cpu", run_dir=str(run_dir))
    first = threading.Thread(target=lambda: result.update(s=run_search(cfg, env_factory=blocking_env)))
    first.start()
    try:
        assert started.wait(60)
        with pytest.raises(AmcError, match="in use by another amc process"):
            run_search(cfg, env_factory=_toy)
    finally:
        go_on.set()
        first.join(60)
    assert result["s"]["episodes"] == 3  # type: ignore[index]
    assert [r["episode"] for r in read_episodes(run_dir / "episodes.csv")] == [1, 2, 3]


def test_the_lock_dies_with_its_process_even_on_kill_9(tmp_path):
    run_dir = tmp_path / "run"
    code = ("import sys, time; from amc.rundir import RunDirLock; RunDirLock(sys.argv[1], command='amc test').acquire(); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(AmcError, match=f"pid {proc.pid}, amc test"):
            RunDirLock(run_dir).acquire()
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs in the child
        proc.wait(30)
    with RunDirLock(run_dir) as lock:
        assert lock.held


# ------------------------------------------------------------------------------------- 4: --resume of nothing
@pytest.mark.parametrize("make_dir", [False, True])
def test_resume_of_a_missing_or_empty_run_dir_is_an_error(tmp_path, toy_cli, capsys, make_dir):
    run_dir = tmp_path / "typo"
    if make_dir:
        run_dir.mkdir()
    assert main(["search", "--resume", str(run_dir), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "nothing to continue" in line and str(run_dir) in line and "drop --resume" in line
    assert run_dir.exists() == make_dir and (not make_dir or not any(run_dir.iterdir()))


def test_a_run_refused_at_validation_leaves_nothing_behind(tmp_path, capsys):
    """An unreachable budget is found by the env; no config.yaml may stay to block the corrected command."""
    pytest.importorskip("envs")
    run_dir = tmp_path / "run"
    argv = ["search", "--checkpoint", str(REF), "--dataset", "digits", "--episodes", "2", "--warmup", "1",
            "--no-progress", "--run-dir", str(run_dir)]
    assert main([*argv, "--target", "macs=0.001"]) == 2
    assert "unreachable" in _one_error_line(capsys)
    assert not run_dir.exists()
    fixed = search_mod.load_search_config(None, {"checkpoint": str(REF), "target": "macs=0.5", "episodes": 2,
                                                 "run_dir": str(run_dir)})
    search_mod._check_run_dir(fixed)  # the corrected command is not "a different search"


# ------------------------------------------------------------------------------------- 5: --model and --checkpoint
def test_checkpoint_alone_is_not_forced_to_the_quickstart_model(tmp_path, toy_cli, capsys):
    from amc.models import ModelSpec, build_model
    from amc.training import save_checkpoint

    spec = ModelSpec(name="mlp", num_classes=10, in_channels=1, image_size=(8, 8))
    ckpt = tmp_path / "mlp.pt"
    save_checkpoint(ckpt, model=build_model(spec), model_spec=spec, data={"dataset": "digits"})
    run_dir = tmp_path / "run"
    assert main(["search", "--checkpoint", str(ckpt), "--dataset", "digits", "--episodes", "2", "--warmup", "1",
                 "--no-progress", "--run-dir", str(run_dir)]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"] is None and saved["checkpoint"] == str(ckpt)
    assert yaml.safe_load((run_dir / "summary.json").read_text())["model_source"]["spec"]["name"] == "mlp"


# ------------------------------------------------------------------------------------- 6: readable errors
def _finished_run(tmp_path: Path, toy_cli) -> Path:
    run_dir = tmp_path / "run"
    assert main(_search(run_dir)) == 0
    return run_dir


@pytest.mark.parametrize("name", ["state.pt", "replay_buffer.pkl", "model.zip"])
def test_a_corrupt_search_checkpoint_is_one_error_line(tmp_path, toy_cli, capsys, name):
    run_dir = _finished_run(tmp_path, toy_cli)
    capsys.readouterr()
    path = run_dir / "checkpoint" / name
    with open(path, "r+b") as f:  # truncate -s 5000 (or to half, for the small files)
        f.truncate(min(5000, path.stat().st_size // 2))
    assert main(_search(run_dir, "--episodes", "6", "--resume")) == 2
    line = _one_error_line(capsys)
    assert str(path) in line and "corrupt or truncated" in line and "--overwrite" in line
    assert "was the model or mode changed" not in line


def test_a_policy_file_of_random_bytes_names_the_file(tmp_path, capsys):
    bad = tmp_path / "policy.json"
    bad.write_bytes(bytes(range(256)) * 4)
    assert main(["apply", "--policy", str(bad), "--checkpoint", str(REF), "--dataset", "digits",
                 "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and "best_policy.json" in line and "codec" not in line


def test_a_full_disk_is_one_error_line_naming_the_file(tmp_path, toy_cli, capsys, monkeypatch):
    import amc.utils

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(amc.utils.os, "fsync", no_space)
    run_dir = tmp_path / "run"
    assert main(_search(run_dir)) == 2
    line = _one_error_line(capsys)
    assert str(run_dir / "config.yaml") in line and "No space left" in line and "free some disk space" in line


def test_a_read_only_run_dir_is_one_error_line(tmp_path, toy_cli, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the writes fail as they would for a user
        import tempfile

        real = tempfile.mkstemp

        def read_only(*a, dir=None, **kw):
            if dir is not None and Path(dir) == run_dir:
                raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / ".x.tmp"))
            return real(*a, dir=dir, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
        (run_dir / LOCK_NAME).touch()  # a lock file can be opened, as in a dir that was writable before
    else:
        (run_dir / LOCK_NAME).touch()
        run_dir.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(_search(run_dir)) == 2
    finally:
        run_dir.chmod(0o755)
    line = _one_error_line(capsys)
    assert str(run_dir) in line and "Permission denied" in line and "writable" in line


# ------------------------------------------------------------------------------------- 7: silent garbage
def test_val_size_0_is_refused(capsys):
    assert main(["search", "--val-size", "0"]) == 2
    assert "must be a count (>= 1)" in _one_error_line(capsys)
    with pytest.raises(AmcError, match="val_size"):
        SearchConfig(model="lenet5", val_size=0.0)


@pytest.mark.parametrize("damage", ["delete", "truncate", "duplicate"])
def test_resume_restores_the_episode_log_from_the_checkpoint(tmp_path, damage):
    run_dir = tmp_path / "run"
    cfg = SearchConfig(checkpoint=str(REF), dataset="digits", episodes=4, warmup=2, checkpoint_every=2, device="cpu",
                       run_dir=str(run_dir))
    run_search(cfg, env_factory=_toy)
    csv = run_dir / "episodes.csv"
    before = read_episodes(csv)
    lines = csv.read_text().splitlines(keepends=True)
    if damage == "delete":
        csv.unlink()
    elif damage == "truncate":
        csv.write_text("".join(lines[:2]))
    else:
        csv.write_text("".join(lines + lines[2:4]))
    import dataclasses

    run_search(dataclasses.replace(cfg, episodes=6, resume=True), env_factory=_toy)
    after = read_episodes(csv)
    assert [r["episode"] for r in after] == [1, 2, 3, 4, 5, 6]
    assert after[:4] == before


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_optuna_resume_restores_the_episode_log_from_the_study(tmp_path, damage):
    import dataclasses

    run_dir = tmp_path / "run"
    cfg = SearchConfig(checkpoint=str(REF), dataset="digits", agent="random", episodes=5, device="cpu",
                       run_dir=str(run_dir))
    run_search(cfg)
    csv = run_dir / "episodes.csv"
    before = read_episodes(csv)
    if damage == "delete":
        csv.unlink()
    else:
        csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:3]))
    summary = run_search(dataclasses.replace(cfg, episodes=7, resume=True))
    after = read_episodes(csv)
    assert [r["episode"] for r in after] == [1, 2, 3, 4, 5, 6, 7]
    keys = ("reward", "best_reward", "accuracy", "macs_ratio")
    assert [[r[k] for k in keys] for r in after[:5]] == [[r[k] for k in keys] for r in before]
    assert summary["best_reward"] == pytest.approx(max(r["reward"] for r in after), rel=1e-7)


# ------------------------------------------------------------------------------------- 1: no silent overwrite
def test_train_refuses_an_existing_run_without_resume_or_overwrite(tmp_path, capsys):
    run_dir = tmp_path / "t"
    argv = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    capsys.readouterr()
    last = (run_dir / "last.pt").read_bytes()
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "already holds a training run" in line and "--resume" in line and "--overwrite" in line
    assert (run_dir / "last.pt").read_bytes() == last  # untouched
    assert main([*argv, "--resume", "--overwrite"]) == 2
    assert main([*argv, "--overwrite"]) == 0
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # the old curves went with the old run


def test_train_refuses_a_run_dir_in_use(tmp_path, capsys):
    run_dir = tmp_path / "t"
    with RunDirLock(run_dir, command="amc train"):
        assert main(["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--run-dir",
                     str(run_dir)]) == 2
    assert "in use by another amc process" in _one_error_line(capsys)


def test_finetune_refuses_an_existing_run(tmp_path, capsys):
    run_dir = tmp_path / "ft"
    run_dir.mkdir()
    (run_dir / "final.pt").write_bytes(b"x")
    argv = ["finetune", "--policy", str(tmp_path / "p.json"), "--epochs", "1", "--run-dir", str(run_dir)]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "already holds a fine-tuning run (final.pt)" in line and "--overwrite" in line
    assert main([*argv, "--resume", "--overwrite"]) == 2


def test_apply_and_export_refuse_to_overwrite_outputs(tmp_path, capsys):
    out = tmp_path / "applied"
    out.mkdir()
    (out / "model.amc").write_bytes(b"earlier")
    assert main(["apply", "--policy", str(tmp_path / "p.json"), "--out", str(out)]) == 2
    assert "already exists" in _one_error_line(capsys)
    target = tmp_path / "m.amc"
    target.write_bytes(b"earlier")
    assert main(["export", "--model-file", str(tmp_path / "x.amc"), "--out", str(target)]) == 2
    line = _one_error_line(capsys)
    assert str(target) in line and "--overwrite" in line
    assert target.read_bytes() == b"earlier" and (out / "model.amc").read_bytes() == b"earlier"
    refuse_existing_files([target], overwrite=True, what="x")  # --overwrite lets it through


# ------------------------------------------------------------------------------------- 8: papercuts
def test_best_policy_png_gets_the_usual_file_mode(tmp_path):
    run_dir = tmp_path / "run"
    run_search(SearchConfig(checkpoint=str(REF), dataset="digits", episodes=2, warmup=1, device="cpu",
                            run_dir=str(run_dir)), env_factory=_toy)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("best_policy.png", "best_policy.json", "config.yaml", "summary.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o666 & ~mask, name


def test_search_tensorboard_run_is_not_named_tb_and_keeps_losses_apart(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    run_search(SearchConfig(model="lenet5", dataset="digits", train_epochs=1, episodes=6, warmup=2, device="cpu",
                            agent_kwargs={"batch_size": 4}, run_dir=str(run_dir)), env_factory=_toy)
    assert not (run_dir / "tb").exists() and (run_dir / "search").is_dir() and (run_dir / "pretrain").is_dir()
    search_tags = EventAccumulator(str(run_dir / "search")).Reload().Tags()["scalars"]
    assert "agent/critic_loss" in search_tags and not any(t.startswith("train/") for t in search_tags)
    pre_tags = EventAccumulator(str(run_dir / "pretrain")).Reload().Tags()["scalars"]
    assert any(t.startswith("train/") for t in pre_tags)


def test_quickstart_resumes_a_finished_run_instead_of_failing(tmp_path, toy_cli, capsys, monkeypatch):
    recipe = (ROOT / "Makefile").read_text().split("\nquickstart:", 1)[1].split("\n\n", 1)[0]
    assert "--resume runs/quickstart" in recipe and "make clean" in recipe
    run_dir = _finished_run(tmp_path, toy_cli)
    rows = (run_dir / "episodes.csv").read_text()
    capsys.readouterr()
    assert main(["search", "--resume", str(run_dir), "--no-progress"]) == 0  # what a second make quickstart runs
    assert "search finished" in capsys.readouterr().out and (run_dir / "episodes.csv").read_text() == rows
    # the plain command on the quickstart's run dir names `make clean`
    monkeypatch.chdir(tmp_path)
    cfg = search_mod.load_search_config(None)
    qs = Path(cfg.run_dir)
    qs.mkdir(parents=True)
    (qs / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (qs / "episodes.csv").write_text("episode,reward\n1,0.5\n")
    with pytest.raises(AmcError, match="make clean"):
        search_mod._check_run_dir(cfg)


def test_default_training_gives_tiny_datasets_enough_steps():
    from amc.cli.train import DEFAULT_EPOCHS, MIN_STEPS, default_epochs

    assert default_epochs(1137, 128) * 9 >= MIN_STEPS  # digits: 9 steps per epoch
    assert default_epochs(45000, 128) == DEFAULT_EPOCHS  # CIFAR-10: the default is enough
    assert default_epochs(1137, 128, world_size=2) > default_epochs(1137, 128)


@pytest.mark.slow
def test_default_lenet5_on_digits_passes_97_percent(tmp_path, capsys):
    assert main(["train", "--model", "lenet5", "--dataset", "digits", "--device", "cpu", "--threads", "1",
                 "--run-dir", str(tmp_path / "t")]) == 0
    ckpt = torch.load(tmp_path / "t" / "final.pt", weights_only=False)
    assert ckpt["metrics"]["test_top1"] >= 97.0


# ------------------------------------------------------------------------------------- 3: RDB table creation race
def test_rdb_storage_retries_the_table_creation_race(tmp_path, monkeypatch):
    """Two workers on a fresh PostgreSQL race to create Optuna's tables; the loser retries and opens it."""
    import optuna
    from sqlalchemy.exc import IntegrityError

    from agents import optuna_agents

    real, calls = optuna.storages.RDBStorage, []

    def racing(url, *a, **kw):
        calls.append(url)
        if len(calls) == 1:  # what psycopg2 raises when the other worker created the type first
            raise IntegrityError("CREATE TABLE studies ...", {}, Exception(
                'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'))
        return real(url, *a, **kw)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(optuna_agents.time, "sleep", lambda s: None)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage, own = optuna_agents.make_storage(url, tmp_path)
    assert len(calls) == 2 and isinstance(storage, real) and not own
    monkeypatch.setattr(optuna.storages, "RDBStorage", real)
    optuna.create_study(storage=storage, study_name="s")  # the storage works

    calls.clear()

    def always(url, *a, **kw):
        calls.append(url)
        raise IntegrityError("INSERT ...", {}, Exception("duplicate key"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", always)
    with pytest.raises(AmcError, match="cannot open storage .*IntegrityError"):
        optuna_agents.make_storage(url, tmp_path)
    assert len(calls) == optuna_agents.RDB_ATTEMPTS


def test_a_connection_error_is_not_retried(tmp_path, monkeypatch):
    import optuna
    from sqlalchemy.exc import OperationalError

    from agents import optuna_agents

    calls = []

    def down(url, *a, **kw):
        calls.append(url)
        raise OperationalError("connect", {}, Exception("could not connect to server"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", down)
    with pytest.raises(AmcError, match="could not connect"):
        optuna_agents.make_storage("sqlite:///x.db", tmp_path)
    assert len(calls) == 1


def test_train_resume_from_a_truncated_last_pt_is_one_error_line(tmp_path, capsys):
    run_dir = tmp_path / "t"
    argv = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "2", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    capsys.readouterr()
    last = run_dir / "last.pt"
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 2)
    assert main([*argv, "--resume"]) == 2
    line = _one_error_line(capsys)
    assert str(last) in line and "--overwrite" in line


def _open_storage_worker(url: str, barrier, results) -> None:  # runs in a spawned process
    import optuna

    from agents.optuna_agents import make_storage

    barrier.wait(timeout=60)
    try:
        storage, _ = make_storage(url, "/tmp")
        optuna.create_study(storage=storage, study_name="race", load_if_exists=True)
        results.put("ok")
    except Exception as e:  # the test reports what went wrong
        results.put(f"{type(e).__name__}: {e}")


@pytest.mark.skipif(not os.environ.get("AMC_TEST_POSTGRES"), reason="set AMC_TEST_POSTGRES=postgresql://USER@HOST:PORT "
                    "(a server where USER may create databases) to run it")
def test_three_workers_on_a_fresh_postgres_database_all_start():
    """The README's recipe on a real server: workers started together on a fresh database (issue 17, case 3)."""
    import multiprocessing as mp
    import uuid

    sqlalchemy = pytest.importorskip("sqlalchemy")
    server = os.environ["AMC_TEST_POSTGRES"].rstrip("/")
    name = f"amc_race_{uuid.uuid4().hex[:8]}"
    import importlib.util

    driver = "psycopg2" if importlib.util.find_spec("psycopg2") else "psycopg"
    admin = sqlalchemy.create_engine(f"postgresql+{driver}://{server.split('://', 1)[1]}/postgres",
                                     isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_open_storage_worker, args=(f"{server}/{name}", barrier, results))
                 for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert sorted(results.get(timeout=5) for _ in procs) == ["ok", "ok", "ok"]
    finally:
        with admin.connect() as c:
            c.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
