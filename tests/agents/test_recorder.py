"""SearchRecorder: episodes.csv, the atomic best policy, summary, resume/restore, the policy chart."""

from __future__ import annotations

import json
import os

import pytest

from agents import EPISODE_COLUMNS, SearchRecorder, plot_policy, read_episodes
from amc.policy import GroupDecision, LayerDecision, Policy


def _policy(keep: float = 0.5) -> Policy:
    return Policy(model={"name": "toy"}, mode="prune", budget={"metric": "macs", "ratio": 0.5},
                  groups=[GroupDecision(layers=["a", "b"], keep_ratio=keep, channels=max(1, int(8 * keep)), total=8),
                          GroupDecision(layers=["c"], keep_ratio=1.0, channels=4, total=4)],
                  layers=[LayerDecision(name=n) for n in "abc"], achieved={"macs_ratio": keep})


def _info(reward: float, keep: float = 0.5, **metrics) -> dict:
    return {"policy": _policy(keep), "actions": [keep, 1.0],
            "metrics": {"reward": reward, "accuracy": reward * 100, "macs_ratio": keep, "params_ratio": keep + 0.1,
                        **metrics}}


def _rec(tmp_path, **kw) -> SearchRecorder:
    base = dict(agent="test", episodes=10, seed=1, base_accuracy=90.0, target="macs=0.5", tensorboard=False,
                plot=False)
    base.update(kw)
    return SearchRecorder(tmp_path, **base)


def test_rows_best_and_summary(tmp_path):
    rec = _rec(tmp_path, config={"agent": "test", "episodes": 10})
    for r in (0.5, 0.7, 0.6):
        rec.record_episode(_info(r, keep=r), noise_sigma=0.1, phase="explore", extra={"actor_loss": 1.5})
    rows = read_episodes(tmp_path / "episodes.csv")
    assert [r["episode"] for r in rows] == [1, 2, 3]
    assert [r["best_reward"] for r in rows] == [0.5, 0.7, 0.7]
    assert rows[0]["actor_loss"] == 1.5 and rows[0]["critic_loss"] is None and rows[0]["size_ratio"] is None
    assert tuple((tmp_path / "episodes.csv").read_text().splitlines()[0].split(",")) == EPISODE_COLUMNS
    pol = Policy.load(tmp_path / "best_policy.json")
    assert pol.search == {"agent": "test", "episode": 2, "episodes": 10, "seed": 1, "reward": 0.7}
    assert pol.accuracy == {"base_val_top1": 90.0, "val_top1": 70.0}
    assert pol.achieved["macs_ratio"] == 0.7 and pol.achieved["params_ratio"] == pytest.approx(0.8)
    s = rec.close()
    assert s["best_episode"] == 2 and s["best_reward"] == 0.7 and s["best_accuracy"] == 70.0
    assert s["achieved"] == {"macs_ratio": 0.7, "params_ratio": pytest.approx(0.8)}
    assert s["episodes"] == 3 and s["seconds_per_episode"] is not None
    assert json.loads((tmp_path / "summary.json").read_text())["best_episode"] == 2
    assert (tmp_path / "config.yaml").is_file()


def test_best_policy_is_written_atomically(tmp_path, monkeypatch):
    rec = _rec(tmp_path)
    rec.record_episode(_info(0.5))
    before = (tmp_path / "best_policy.json").read_text()
    rec.record_episode(_info(0.4))  # no improvement: file untouched
    assert (tmp_path / "best_policy.json").read_text() == before

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        rec.record_episode(_info(0.9))
    monkeypatch.undo()
    assert (tmp_path / "best_policy.json").read_text() == before  # never half a file
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no leftovers


def test_restore_truncates_and_resume_continues_from_files(tmp_path):
    rec = _rec(tmp_path)
    rec.record_episode(_info(0.5))
    state = rec.state_dict()
    rec.record_episode(_info(0.9))
    rec.record_episode(_info(0.6))
    rec.restore(state)
    assert rec.episode == 1 and rec.best.reward == 0.5
    assert [r["episode"] for r in read_episodes(tmp_path / "episodes.csv")] == [1]
    assert Policy.load(tmp_path / "best_policy.json").search["episode"] == 1
    rec.record_episode(_info(0.55))
    rec.close()

    again = _rec(tmp_path, resume=True)
    assert again.episode == 2 and again.best.reward == 0.55 and again.best.episode == 2
    again.record_episode(_info(0.1))
    assert [r["episode"] for r in read_episodes(tmp_path / "episodes.csv")] == [1, 2, 3]

    fresh = _rec(tmp_path)  # resume=False starts a new history
    assert fresh.episode == 0 and not (tmp_path / "episodes.csv").exists()


def test_torn_csv_line_is_ignored(tmp_path):
    rec = _rec(tmp_path)
    rec.record_episode(_info(0.5))
    with (tmp_path / "episodes.csv").open("a") as f:
        f.write("2,explore,0.7")  # killed mid-write
    assert [r["episode"] for r in read_episodes(tmp_path / "episodes.csv")] == [1]


def test_missing_reward_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="reward"):
        _rec(tmp_path).record_episode({"metrics": {"accuracy": 50.0}})


def test_policy_chart_and_tensorboard(tmp_path):
    pol = _policy()
    pol.layers = [LayerDecision(name="a", w_bits=8, a_bits=8), LayerDecision(name="b", w_bits=4, a_bits=6),
                  LayerDecision(name="c", w_bits=2, a_bits=None)]
    fig = plot_policy(pol, title="t")
    assert len(fig.axes) == 2  # keep ratios and bits
    rec = _rec(tmp_path, tensorboard=True, plot=True)
    rec.record_episode(_info(0.5, latency_ms=3.0, size_ratio=0.2))
    rec.close()
    assert (tmp_path / "best_policy.png").stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "search")).Reload()
    assert {"search/latency_ms", "search/size_ratio", "search/reward"} <= set(ea.Tags()["scalars"])
    assert "search/best_policy" in ea.Tags()["images"]
