"""Optuna agents on the real CompressionEnv (digits, the reference LeNet-5): outputs, budget, resume,
Pareto front, storage URLs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from agents import AGENTS, SearchConfig, read_episodes, run_search
from agents.optuna_agents import (
    LOCAL_JOURNAL,
    PARETO_FILE,
    STATE_FILE,
    OptunaAgent,
    OptunaConfig,
    default_study_name,
    make_storage,
    redact_storage,
)
from amc.cli import build_parser
from amc.cli.search import config_from_args
from amc.errors import AmcError
from amc.policy import Policy
from tests._paths import LENET_DIGITS

REF = LENET_DIGITS
OPTUNA_AGENTS = sorted(n for n in AGENTS.names() if issubclass(AGENTS.get(n), OptunaAgent))


def _cfg(run_dir: Path, **kw) -> SearchConfig:
    base = dict(checkpoint=str(REF), dataset="digits", target="macs=0.5", episodes=3, seed=0, device="cpu",
                run_dir=str(run_dir))
    base.update(kw)
    return SearchConfig(**base)


def _study(run_dir: Path, cfg: SearchConfig) -> optuna.Study:
    storage, _ = make_storage(None, run_dir)
    return optuna.load_study(study_name=default_study_name(cfg), storage=storage)


@pytest.mark.parametrize("name", OPTUNA_AGENTS)
def test_every_optuna_agent_writes_the_standard_outputs(tmp_path, name):
    target = "macs=1.0" if AGENTS.get(name).multi_objective else "macs=0.5"
    cfg = _cfg(tmp_path, agent=name, target=target)
    summary = run_search(cfg)
    rows = read_episodes(tmp_path / "episodes.csv")
    assert [r["episode"] for r in rows] == [1, 2, 3]  # episode = trial number + 1
    assert all(r["macs_ratio"] <= float(target.split("=")[1]) + 1e-9 for r in rows)
    for name_ in ("config.yaml", "summary.json", "best_policy.json", "best_policy.png", LOCAL_JOURNAL, STATE_FILE):
        assert (tmp_path / name_).is_file(), name_
    assert list((tmp_path / "search").glob("events.out.tfevents.*"))
    assert Policy.load(tmp_path / "best_policy.json").search["agent"] == name
    assert summary["agent"] == name and summary["episodes"] == 3 and summary["evaluations"] == 3
    assert summary["study"]["n_complete"] == 3 and not summary["interrupted"]
    assert summary["best_accuracy"] == pytest.approx(max(rows, key=lambda r: r["reward"])["accuracy"])
    # the trials carry what the env applied
    study = _study(tmp_path, cfg)
    t = study.trials[0]
    attrs = t.user_attrs["amc"]
    assert attrs["episode"] == 1 and len(attrs["actions"]) == 4 and attrs["metrics"]["accuracy"] == pytest.approx(rows[0]["accuracy"])
    assert sorted(t.params) == ["d000_prune", "d001_prune", "d002_prune", "d003_prune"]
    assert all(a <= t.params[f"d{i:03d}_prune"] + 1e-6 for i, a in enumerate(attrs["actions"]))  # clipped, never raised
    assert Policy.from_dict(attrs["policy"]).achieved["macs_ratio"] == pytest.approx(rows[0]["macs_ratio"])


def test_tensorboard_keys_match_ddpg(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_search(_cfg(tmp_path, agent="random"))
    acc = EventAccumulator(str(tmp_path / "search"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"search/reward", "search/best_reward", "search/accuracy", "search/macs_ratio",
            "search/params_ratio", "search/size_ratio"} <= tags
    assert [e.step for e in acc.Scalars("search/reward")] == [1, 2, 3]


def test_budget_is_met_and_same_seed_repeats(tmp_path):
    a = run_search(_cfg(tmp_path / "a", agent="tpe", episodes=12, seed=3))
    b = run_search(_cfg(tmp_path / "b", agent="tpe", episodes=12, seed=3))
    ra, rb = read_episodes(tmp_path / "a" / "episodes.csv"), read_episodes(tmp_path / "b" / "episodes.csv")
    assert [r["reward"] for r in ra] == [r["reward"] for r in rb]
    assert a["best_reward"] == b["best_reward"]
    assert all(r["macs_ratio"] <= 0.5 + 1e-9 for r in ra)
    c = run_search(_cfg(tmp_path / "c", agent="tpe", episodes=12, seed=4))
    assert [r["reward"] for r in read_episodes(tmp_path / "c" / "episodes.csv")] != [r["reward"] for r in ra]
    assert c["sampler"] == "TPESampler"


def test_resume_continues_the_study_and_closes_a_killed_trial(tmp_path):
    cfg = _cfg(tmp_path, agent="tpe", episodes=4)
    run_search(cfg)
    # a kill during trial 4: a RUNNING trial of this run left in the study, no CSV row
    run_id = json.loads((tmp_path / STATE_FILE).read_text())["run_id"]
    study = _study(tmp_path, cfg)
    zombie = study.ask()
    zombie.set_user_attr("worker", {"run_id": run_id, "seed": 0})
    with pytest.raises(AmcError, match="--resume"):
        run_search(dataclasses.replace(cfg, episodes=7))  # same dir without --resume is refused
    summary = run_search(dataclasses.replace(cfg, episodes=7, resume=True))
    study = _study(tmp_path, cfg)
    states = {t.number: t.state for t in study.trials}
    assert states[4] == TrialState.FAIL
    assert [n for n, s in states.items() if s == TrialState.COMPLETE] == [0, 1, 2, 3, 5, 6, 7]
    eps = [r["episode"] for r in read_episodes(tmp_path / "episodes.csv")]
    assert eps == [1, 2, 3, 4, 6, 7, 8]  # episode = trial number + 1: the failed trial leaves a gap
    assert summary["evaluations"] == 7 and summary["study"]["n_failed"] == 1
    # trial 0 of the resumed session is not a replay of the first session's draws
    params = [tuple(sorted(t.params.items())) for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(set(params)) == len(params)


def test_overwrite_starts_a_new_study(tmp_path):
    cfg = _cfg(tmp_path, agent="random", episodes=3)
    run_search(cfg)
    run_search(dataclasses.replace(cfg, overwrite=True))
    assert len(_study(tmp_path, cfg).trials) == 3


def test_nsga2_writes_a_pareto_front(tmp_path):
    # the plain score (no proxy): reconstruction keeps LeNet accurate so cheaply that the front stays short
    cfg = _cfg(tmp_path, agent="nsga2", target="macs=1.0", episodes=16, agent_kwargs={"population_size": 6},
               proxy="vanilla")
    summary = run_search(cfg)
    doc = json.loads((tmp_path / PARETO_FILE).read_text())
    assert doc["format"] == "amc-pareto" and doc["metric"] == "macs_ratio" and doc["n_trials"] == 16
    front = doc["front"]
    assert summary["pareto"]["size"] == len(front) >= 2
    costs = [p["macs_ratio"] for p in front]
    accs = [p["accuracy"] for p in front]
    assert costs == sorted(costs) and accs == sorted(accs)  # cheaper points are less accurate, else dominated
    pts = [(t["accuracy"], t["macs_ratio"]) for t in doc["trials"]]
    for p in front:  # no trial dominates a front point
        assert not any(a >= p["accuracy"] and c <= p["macs_ratio"] and (a, c) != (p["accuracy"], p["macs_ratio"])
                       for a, c in pts)
        pol = Policy.from_dict(p["policy"])
        assert pol.achieved["macs_ratio"] == pytest.approx(p["macs_ratio"])
    assert max(costs) > 0.6  # unconstrained (target ratio 1): the front reaches well past 0.5
    assert summary["objectives"] == ["accuracy", "macs_ratio"]


def test_storage_urls_and_redaction(tmp_path):
    _, own = make_storage(None, tmp_path)
    assert own
    _, own = make_storage(str(tmp_path / "shared.journal"), tmp_path)
    assert not own
    _, own = make_storage(f"journal:{tmp_path / 'j2.log'}", tmp_path)
    assert not own
    st, _ = make_storage(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    assert isinstance(st, optuna.storages.RDBStorage)
    assert redact_storage("postgresql://amc:secret@db.example:5432/amc") == "postgresql://amc:***@db.example:5432/amc"
    assert redact_storage("postgresql://amc@db/amc") == "postgresql://amc@db/amc"
    with pytest.raises(AmcError, match="unknown scheme 'ftp'"):
        make_storage("ftp://x/y", tmp_path)
    with pytest.raises(AmcError, match="does not exist"):
        make_storage(str(tmp_path / "nodir" / "x.journal"), tmp_path)
    with pytest.raises(AmcError, match=r"unknown tpe option\(s\) nope"):
        OptunaConfig.from_dict({"nope": 1}, agent="tpe")
    with pytest.raises(AmcError, match=r"^nsga2 option: population_size=1: "):
        OptunaConfig.from_dict({"population_size": 1}, agent="nsga2")
    assert OptunaConfig(storage="postgresql://u:pw@h/d").to_dict()["storage"] == "postgresql://u:***@h/d"


def test_cli_storage_and_study_name_reach_the_agent():
    args = build_parser().parse_args(["search", "--agent", "tpe", "--storage", "postgresql://amc@db/amc",
                                      "--study-name", "lenet5-macs05", "--agent-opt", "n_startup_trials=5"])
    cfg = config_from_args(args)
    assert cfg.agent_kwargs == {"n_startup_trials": 5, "storage": "postgresql://amc@db/amc",
                                "study_name": "lenet5-macs05"}


def test_a_study_of_another_search_is_refused(tmp_path):
    shared = str(tmp_path / "shared.journal")
    run_search(_cfg(tmp_path / "a", agent="random", agent_kwargs={"storage": shared, "study_name": "s"}))
    with pytest.raises(AmcError, match="belongs to another search .*target"):
        run_search(_cfg(tmp_path / "b", agent="random", target="macs=0.7",
                        agent_kwargs={"storage": shared, "study_name": "s"}))
    config = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert config["agent_kwargs"]["storage"] == shared


def test_database_url_without_driver_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(AmcError, match=r"needs a postgresql driver: pip install 'amc\[postgres\]'"):
        make_storage("postgres://amc@db.example/amc", tmp_path)
    with pytest.raises(AmcError, match="needs a mysql driver: pip install pymysql"):
        make_storage("mysql://amc:pw@db.example/amc", tmp_path)
