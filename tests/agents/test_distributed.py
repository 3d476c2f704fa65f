"""Two worker processes share one Optuna study (a journal file): N trials in all, none lost or doubled."""

from __future__ import annotations

import multiprocessing as mp

import optuna
from optuna.trial import TrialState

from agents import read_episodes
from agents.optuna_agents import make_storage
from tests._paths import LENET_DIGITS

REF = LENET_DIGITS
N = 30
STUDY = "shared-digits"


def _worker(run_dir: str, storage: str, seed: int, barrier, results) -> None:  # runs in a spawned process
    import torch

    torch.set_num_threads(1)
    from agents import SearchConfig, run_search
    from envs import CompressionEnv

    def env_factory(*args, **kwargs):
        env = CompressionEnv(*args, **kwargs)
        barrier.wait(timeout=120)  # both workers are ready: their trials interleave
        return env

    cfg = SearchConfig(checkpoint=str(REF), dataset="digits", agent="tpe", target="macs=0.5", episodes=N, seed=seed,
                       device="cpu", run_dir=run_dir, agent_kwargs={"storage": storage, "study_name": STUDY})
    summary = run_search(cfg, env_factory=env_factory)
    results.put((seed, summary["evaluations"]))


def test_two_workers_finish_one_study_together(tmp_path):
    storage = str(tmp_path / "study.journal")
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / f"w{s}"), storage, s, barrier, results))
             for s in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    evaluated = dict(results.get(timeout=5) for _ in procs)

    study = optuna.load_study(study_name=STUDY, storage=make_storage(storage, tmp_path)[0])
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    numbers = sorted(t.number for t in complete)
    assert numbers == list(range(N))  # every trial number once, all COMPLETE
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in others)  # a race's extra ask
    assert all(t.number >= N for t in others)

    # each worker recorded exactly its own trials (episode = trial number + 1); together all of them
    by_worker = {s: [r["episode"] - 1 for r in read_episodes(tmp_path / f"w{s}" / "episodes.csv")] for s in (0, 1)}
    assert sorted(by_worker[0] + by_worker[1]) == list(range(N))
    assert evaluated == {s: len(v) for s, v in by_worker.items()}
    assert min(len(v) for v in by_worker.values()) > 0  # both did work
    runs = {t.user_attrs["worker"]["seed"] for t in complete}
    assert runs == {0, 1}
    for s in (0, 1):
        assert {t.number for t in complete if t.user_attrs["worker"]["seed"] == s} == set(by_worker[s])
