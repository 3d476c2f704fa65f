"""benchmarks.harness: the episode timer (a Gymnasium wrapper), mean ± std, stage results."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest

from benchmarks.harness import (
    TIMING_KEYS,
    TimedEnv,
    episode_split,
    machine_info,
    mean_std,
    read_result,
    stage,
)


class _SleepyEnv(gym.Env):
    """Three steps per episode; each step sleeps 10 ms and reports 4 ms of it as ``evaluate``."""

    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Box(0, 1, (1,))

    def __init__(self) -> None:
        self.t = 0
        self.hidden = "reachable through .unwrapped"

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        time.sleep(0.01)
        done = self.t == 3
        info = {"timing": {"evaluate": 0.004 * 3}} if done else {}
        return np.zeros(1, np.float32), 0.0, done, False, info


def test_timed_env_splits_env_and_agent_time() -> None:
    records: list[dict[str, float]] = []
    env = TimedEnv(_SleepyEnv(), records)
    assert env.unwrapped.hidden == "reachable through .unwrapped"
    for _ in range(2):
        env.reset()
        done = False
        while not done:
            time.sleep(0.005)  # the "agent" thinks
            done = env.step(env.action_space.sample())[2]
    assert len(records) == 2
    r = records[1]
    assert set(r) == {*TIMING_KEYS, "env_other", "agent", "episode_s"}
    assert r["evaluate"] == pytest.approx(0.012)
    assert r["env_other"] >= 0.03 - 0.012 - 1e-3  # 3 sleeps of 10 ms, less the reported evaluate
    assert r["agent"] >= 0.015 - 1e-3  # 3 agent pauses (the first episode's first one is not counted)
    assert r["episode_s"] == pytest.approx(r["env_other"] + r["agent"] + r["evaluate"])
    split = episode_split(records, ["warmup", "explore"])
    assert split["all"]["episodes"] == 1 and "explore" in split and "warmup" not in split  # first one skipped


def test_mean_std_and_machine_info() -> None:
    out = mean_std([{"a": 1.0}, {"a": 3.0}, {"b": 5.0}], ("a", "b", "c"))
    assert out == {"a": 2.0, "a_std": pytest.approx(2 ** 0.5), "b": 5.0, "b_std": 0.0, "c": None, "c_std": None}
    info = machine_info()
    assert info["cpus"] >= 1 and info["threads"] >= 1 and "torch" in info


def test_stage_records_time_and_load_and_results_are_reread(tmp_path) -> None:
    times: dict = {}
    with stage("search", times):
        time.sleep(0.01)
    assert times["search"]["wall_s"] >= 0.0 and "loadavg_start" in times["search"]
    assert read_result(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert read_result(tmp_path / "bad.json") is None  # unreadable: the stage runs again
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_result(tmp_path / "ok.json") == {"a": 1}


def _experiment(body):
    from benchmarks.harness import Experiment

    return Experiment(doc="A test experiment.\n\nMore words.", arguments=lambda p: p.add_argument("--n", type=int,
                      default=2), body=body, out="unused", result="r.json", threads=1)


def test_experiment_writes_results_with_machine_and_load(tmp_path, capsys) -> None:
    import json

    rc = _experiment(lambda a: {"n": a.n, "out": str(a.out)}).main(["--n", "3", "--out", str(tmp_path / "o")])
    assert rc == 0
    doc = json.loads((tmp_path / "o" / "r.json").read_text())
    assert doc["n"] == 3 and doc["out"] == str(tmp_path / "o")
    assert doc["machine"]["threads"] == 1 and "loadavg" in doc["machine"] and "loadavg_end" in doc
    assert doc["wall_s"] >= 0 and "--n 3" in doc["command"]
    assert "wrote" in capsys.readouterr().out


def test_experiment_turns_amc_errors_into_one_line(tmp_path, capsys) -> None:
    from amc.errors import AmcError

    def fails(args):
        raise AmcError("pass --checkpoint, a trained model")

    assert _experiment(fails).main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: pass --checkpoint, a trained model"]
    assert not (tmp_path / "r.json").exists()
    assert _experiment(lambda a: {}).main(["--threads", "0", "--out", str(tmp_path)]) == 2
