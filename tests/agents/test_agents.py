"""DDPG agent: noise, replay buffer, lrs, warm-up, outputs, checkpoint/resume, stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from stable_baselines3.common.utils import update_learning_rate

from agents import (
    AGENTS,
    EPISODE_COLUMNS,
    DDPGAgent,
    SearchConfig,
    SearchRecorder,
    read_episodes,
    stop_on_signals,
)
from agents.ddpg import DDPGConfig, EpisodeReplayBuffer, LRScaledAdam
from agents.noise import TruncatedNormalNoise, truncated_normal
from amc.errors import AmcError
from amc.policy import Policy
from tests._toy_env import ToyCompressionEnv


def _cfg(run_dir: Path, **kw) -> SearchConfig:
    base = dict(model="lenet5", episodes=12, warmup=4, seed=0, checkpoint_every=4, run_dir=str(run_dir))
    base.update(kw)
    return SearchConfig(**base)


def _run(run_dir: Path, *, episodes: int, resume: bool = False, stop_at: int | None = None,
         raise_at: int | None = None, tensorboard: bool = False, plot: bool = False, **kw):
    cfg = _cfg(run_dir, episodes=episodes, resume=resume, **kw)
    env = ToyCompressionEnv()
    rec = SearchRecorder(run_dir, agent="ddpg", episodes=episodes, seed=cfg.seed, base_accuracy=env.base_accuracy,
                         target=cfg.target, config=cfg.to_dict(), resume=resume, tensorboard=tensorboard, plot=plot)
    agent = DDPGAgent(env, cfg, rec)

    def listener(row):
        if row["episode"] == stop_at:
            agent.request_stop()
        if row["episode"] == raise_at:
            raise RuntimeError("simulated crash")

    rec.listeners.append(listener)
    agent.run(episodes)
    summary = rec.close(interrupted=agent.interrupted, extra=agent.summary_extra())
    return agent, summary


# ------------------------------------------------------------------------------------- noise
def test_truncated_normal_stays_in_bounds_and_is_normal_inside():
    rng = np.random.default_rng(0)
    x = truncated_normal(rng, 0.5, np.full(20000, -0.3), np.full(20000, 1.7))
    assert x.min() >= -0.3 and x.max() <= 1.7
    # the density inside the bounds is the normal's: P(0 < x < 0.5 | x in box) matches
    p_box = stats.norm.cdf(1.7 / 0.5) - stats.norm.cdf(-0.3 / 0.5)
    p_in = (stats.norm.cdf(1.0) - 0.5) / p_box
    assert abs(np.mean((x > 0) & (x < 0.5)) - p_in) < 0.015
    assert np.all(truncated_normal(rng, 0.0, np.array([-1.0]), np.array([1.0])) == 0.0)


def test_noise_truncates_around_the_actor_mean():
    mu = np.array([[0.9]])  # normalised units, close to the upper bound 1
    noise = TruncatedNormalNoise(1, sigma=0.5, unit_scale=2.0, mean_fn=lambda: mu, seed=1)
    draws = np.array([noise() for _ in range(5000)]).reshape(-1)
    assert draws.max() <= 1.0 - 0.9 + 1e-7 and draws.min() >= -1.0 - 0.9 - 1e-7
    assert np.mean(draws > 0) < 0.1  # most of the mass is pushed to the inside of the box
    assert draws.std() > 0.3  # sigma 0.5 in [0, 1] units is 1.0 in SB3's [-1, 1] units


def test_noise_warmup_decay_and_reset_semantics():
    noise = TruncatedNormalNoise(1, sigma=0.5, decay=0.95, warmup=3, seed=0)
    sigmas = []
    for _ in range(6):
        noise.reset()  # SB3 also resets at every learn() start: a reset without a draw is not an episode
        sigmas.append(noise.sigma)
        draws = [noise() for _ in range(4)]
        if noise.in_warmup:
            assert all(np.all(d == 0) for d in draws)
        noise.reset()
    assert sigmas == pytest.approx([0, 0, 0, 0.5, 0.475, 0.45125])
    assert noise.episode == 6
    state = noise.state_dict()
    a = [noise() for _ in range(3)]
    noise.load_state_dict(state)
    assert np.allclose(a, [noise() for _ in range(3)])
    with pytest.raises(ValueError):
        TruncatedNormalNoise(1, decay=1.5)


# ------------------------------------------------------------------------------------- replay buffer
def _buffer(**kw) -> EpisodeReplayBuffer:
    obs = gym.spaces.Box(0, 1, (3,), np.float32)
    act = gym.spaces.Box(-1, 1, (1,), np.float32)
    return EpisodeReplayBuffer(100, obs, act, device="cpu", **kw)


def _add_episode(buf: EpisodeReplayBuffer, final: float, n: int = 4) -> None:
    for t in range(n):
        done = t == n - 1
        buf.add(np.full((1, 3), t, np.float32), np.full((1, 3), t + 1, np.float32), np.zeros((1, 1), np.float32),
                np.array([final if done else 0.0], np.float32), np.array([done]), [{}])


def test_replay_buffer_gives_every_transition_the_final_reward():
    buf = _buffer(final_reward_to_all=True, baseline_alpha=None)
    _add_episode(buf, 0.7, n=3)
    assert buf.pos == 3 and buf.pending == 0
    assert np.allclose(buf.rewards[:3, 0], 0.7)
    assert buf.dones[:3, 0].tolist() == [0, 0, 1]
    assert buf.observations[:3, 0, 0].tolist() == [0, 1, 2]
    buf.add(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 1)), np.array([0.0]), np.array([False]), [{}])
    assert buf.pos == 3 and buf.pending == 1  # held until the episode ends

    sparse = _buffer(final_reward_to_all=False, baseline_alpha=None)
    _add_episode(sparse, 0.7, n=3)
    assert np.allclose(sparse.rewards[:3, 0], [0.0, 0.0, 0.7])


def test_replay_buffer_moving_average_baseline():
    buf = _buffer(final_reward_to_all=True, baseline_alpha=0.5)
    _add_episode(buf, 1.0)
    _add_episode(buf, 3.0)
    np.random.seed(0)
    b1 = buf.sample(16)
    m1 = float((b1.rewards + buf.reward_baseline).mean())
    assert buf.reward_baseline == pytest.approx(m1)  # first batch initialises the baseline
    assert float(b1.rewards.mean()) == pytest.approx(0.0, abs=1e-6)
    b2 = buf.sample(16)
    raw2 = b2.rewards + buf.reward_baseline
    assert buf.reward_baseline == pytest.approx(m1 + 0.5 * (float(raw2.mean()) - m1))


# ------------------------------------------------------------------------------------- lrs
def test_critic_steps_ten_times_faster_despite_sb3_lr_updates():
    p = torch.nn.Parameter(torch.zeros(5))
    opt = LRScaledAdam([p], lr=1e-4, lr_scale=10.0)
    update_learning_rate(opt, 1e-4)  # what SB3's _update_learning_rate does before every train()
    p.grad = torch.ones(5)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((5,), -1e-3), rtol=1e-3)  # Adam's first step = lr * sign
    assert opt.param_groups[0]["lr"] == 1e-4
    state = opt.state_dict()
    assert state["param_groups"][0]["lr_scale"] == 10.0


def test_ddpg_is_configured_as_amc(tmp_path):
    cfg = _cfg(tmp_path, warmup=7)
    env = ToyCompressionEnv()
    agent = DDPGAgent(env, cfg, SearchRecorder(tmp_path, agent="ddpg", tensorboard=False, plot=False))
    agent.setup()
    m = agent.model
    n = env.n_decisions
    assert (m.buffer_size, m.learning_starts, m.batch_size, m.tau, m.gamma) == (100 * n, 7 * n, 64, 0.01, 1.0)
    assert m.train_freq.frequency == 1 and m.train_freq.unit.value == "episode" and m.gradient_steps == -1
    assert [x.out_features for x in m.actor.mu if isinstance(x, torch.nn.Linear)] == [300, 300, 1]
    assert len(m.critic.q_networks) == 1
    assert [x.out_features for x in m.critic.q_networks[0] if isinstance(x, torch.nn.Linear)] == [300, 300, 1]
    assert m.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert m.critic.optimizer.param_groups[0]["lr"] * m.critic.optimizer.param_groups[0]["lr_scale"] == \
        pytest.approx(1e-3)
    assert isinstance(m.replay_buffer, EpisodeReplayBuffer) and m.replay_buffer.final_reward_to_all
    assert agent.noise.sigma0 == 0.5 and agent.noise.decay == 0.95 and agent.noise.warmup == 7
    assert "ddpg" in AGENTS
    with pytest.raises(AmcError, match="valid: .*actor_lr"):
        DDPGConfig.from_dict({"lr": 1})
    with pytest.raises(AmcError, match=r"^ddpg option: tau=0: .*greater than 0$"):
        DDPGConfig.from_dict({"tau": 0})
    assert DDPGConfig.from_dict({"actor_lr": "1e-4", "hidden": [64, 64]}).to_dict()["hidden"] == [64, 64]  # YAML 1.1


# ------------------------------------------------------------------------------------- warm-up
def test_warmup_actions_are_the_uniform_samples(tmp_path):
    warmup, seed = 10, 5
    agent, _ = _run(tmp_path, episodes=warmup + 1, warmup=warmup, seed=seed)
    n = agent.steps_per_episode
    stored = agent.model.replay_buffer.actions[: warmup * n, 0, 0]  # SB3 stores [-1, 1] actions
    space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    space.seed(seed)
    expected = np.array([space.sample()[0] for _ in range(warmup * n)]) * 2 - 1
    assert np.allclose(stored, expected, atol=1e-6)  # uniform, no noise added
    assert stats.kstest((stored + 1) / 2, "uniform").pvalue > 0.01
    rows = read_episodes(tmp_path / "episodes.csv")
    assert [r["phase"] for r in rows] == ["warmup"] * warmup + ["explore"]
    assert [r["noise_sigma"] for r in rows] == [0.0] * warmup + [0.5]


# ------------------------------------------------------------------------------------- outputs
def test_ddpg_on_toy_env_writes_all_outputs(tmp_path):
    agent, summary = _run(tmp_path, episodes=8, warmup=3, tensorboard=True, plot=True)
    rows = read_episodes(tmp_path / "episodes.csv")
    header = (tmp_path / "episodes.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == EPISODE_COLUMNS
    assert [r["episode"] for r in rows] == list(range(1, 9))
    assert all(r["actor_loss"] is None for r in rows[:3]) and all(r["critic_loss"] is not None for r in rows[4:])
    assert all(r["macs_ratio"] <= 0.5 + 1e-9 for r in rows)  # the env enforces the budget
    assert rows[-1]["best_reward"] == max(r["reward"] for r in rows)

    pol = Policy.load(tmp_path / "best_policy.json")
    best = max(rows, key=lambda r: r["reward"])
    assert pol.search["agent"] == "ddpg" and pol.search["episode"] == best["episode"]
    assert pol.search["episodes"] == 8 and pol.search["seed"] == 0
    assert pol.accuracy["val_top1"] == pytest.approx(best["accuracy"]) and pol.accuracy["base_val_top1"] == 95.0

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("agent", "episodes", "base_accuracy", "best_accuracy", "best_reward", "best_episode", "target",
                "achieved", "wall_time_s", "seconds_per_episode"):
        assert key in on_disk, key
    assert on_disk["episodes"] == 8 and on_disk["best_episode"] == best["episode"]
    assert on_disk["achieved"]["macs_ratio"] == pytest.approx(best["macs_ratio"])
    assert summary["best_reward"] == pytest.approx(best["reward"])
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["episodes"] == 8
    assert (tmp_path / "best_policy.png").stat().st_size > 1000
    assert {p.name for p in (tmp_path / "checkpoint").iterdir()} == {"model.zip", "replay_buffer.pkl", "state.pt"}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "search"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"search/reward", "search/best_reward", "search/accuracy", "search/macs_ratio", "search/params_ratio",
            "search/noise_sigma", "agent/actor_loss", "agent/critic_loss"} <= tags
    assert [e.step for e in ea.Scalars("search/reward")] == list(range(1, 9))
    assert "search/best_policy" in ea.Tags()["images"]


def test_sparse_reward_switch(tmp_path):
    agent, _ = _run(tmp_path, episodes=3, warmup=1, final_reward_to_all=False)
    n = agent.steps_per_episode
    r = agent.model.replay_buffer.rewards[: 3 * n, 0].reshape(3, n)
    assert np.all(r[:, :-1] == 0) and np.all(r[:, -1] > 0)


# ------------------------------------------------------------------------------------- checkpoint / resume
_SAME = ("phase", "reward", "best_reward", "accuracy", "macs_ratio", "noise_sigma", "actor_loss", "critic_loss")


def _history(run_dir: Path) -> list[tuple]:
    return [(r["episode"], *(r[k] for k in _SAME)) for r in read_episodes(run_dir / "episodes.csv")]


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    _, full = _run(tmp_path / "a", episodes=14, tensorboard=True)
    _, part = _run(tmp_path / "b", episodes=14, stop_at=6, tensorboard=True)
    assert part["interrupted"] and part["episodes"] == 6
    state = torch.load(tmp_path / "b" / "checkpoint" / "state.pt", weights_only=False)
    assert state["episode"] == 6  # checkpointed at the stop, not at the last multiple of 4
    _, rest = _run(tmp_path / "b", episodes=14, resume=True, tensorboard=True)
    assert not rest["interrupted"] and rest["episodes"] == 14
    assert [h[0] for h in _history(tmp_path / "b")] == list(range(1, 15))
    assert _history(tmp_path / "b") == _history(tmp_path / "a")
    assert rest["best_reward"] == full["best_reward"] and rest["best_episode"] == full["best_episode"]
    assert (tmp_path / "b" / "best_policy.json").read_text() == (tmp_path / "a" / "best_policy.json").read_text()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "b" / "search"), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in ea.Scalars("search/reward")] == list(range(1, 15))


def test_crash_between_checkpoints_resumes_from_the_last_one(tmp_path):
    _run(tmp_path / "a", episodes=12)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "b", episodes=12, raise_at=6, tensorboard=True)  # last checkpoint: episode 4
    assert len(read_episodes(tmp_path / "b" / "episodes.csv")) == 6
    _, summary = _run(tmp_path / "b", episodes=12, resume=True, tensorboard=True)
    assert [h[0] for h in _history(tmp_path / "b")] == list(range(1, 13))  # rows 5, 6 redone, not duplicated
    assert _history(tmp_path / "b") == _history(tmp_path / "a")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "b" / "search"), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in ea.Scalars("search/reward")] == list(range(1, 13))


def test_resume_can_extend_a_finished_run(tmp_path):
    _run(tmp_path, episodes=6)
    _, summary = _run(tmp_path, episodes=9, resume=True)
    assert summary["episodes"] == 9
    assert [h[0] for h in _history(tmp_path)] == list(range(1, 10))


def test_sigterm_finishes_the_episode_and_leaves_a_usable_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, episodes=10, checkpoint_every=100)
    env = ToyCompressionEnv()
    rec = SearchRecorder(tmp_path, agent="ddpg", episodes=10, config=cfg.to_dict(), tensorboard=False, plot=False)
    agent = DDPGAgent(env, cfg, rec)
    rec.listeners.append(lambda row: os.kill(os.getpid(), signal.SIGTERM) if row["episode"] == 3 else None)
    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(agent):
        agent.run(10)
    assert signal.getsignal(signal.SIGTERM) is previous
    assert agent.interrupted and rec.episode == 3
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=False)
    assert state["episode"] == 3 and state["recorder"]["episode"] == 3
    _, summary = _run(tmp_path, episodes=5, resume=True)
    assert summary["episodes"] == 5 and [h[0] for h in _history(tmp_path)] == [1, 2, 3, 4, 5]


def test_resume_without_checkpoint_starts_over(tmp_path):
    _, summary = _run(tmp_path, episodes=3, resume=True)
    assert summary["episodes"] == 3


# ------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_ddpg_beats_random_on_the_toy_env(tmp_path):
    episodes, warmup = 300, 50
    agent, summary = _run(tmp_path, episodes=episodes, warmup=warmup, checkpoint_every=1000)
    env = ToyCompressionEnv(noise=0.0)
    obs, _ = env.reset(seed=0)
    for _ in range(env.n_decisions):
        action, _ = agent.model.predict(obs, deterministic=True)
        obs, reward, done, _, info = env.step(action)
    greedy = reward
    rng = np.random.default_rng(0)
    random_rewards = []
    for i in range(episodes):
        env.reset(seed=i)
        for _ in range(env.n_decisions):
            _, r, _, _, _ = env.step(rng.uniform(0, 1, 1))
        random_rewards.append(r)
    optimum = env.accuracy(env.optimal_keep()) * 0.01
    gap = optimum - np.mean(random_rewards)  # ~0.11
    # the learned (noise-free) policy and the late exploring episodes close most of the gap to the optimum
    assert greedy > np.mean(random_rewards) + 0.6 * gap
    late = [r["reward"] for r in read_episodes(tmp_path / "episodes.csv")[-50:]]
    assert np.mean(late) > np.mean(random_rewards) + 0.6 * gap
    assert summary["best_reward"] > np.mean(random_rewards) + 0.7 * gap


# ------------------------------------------------------------------------------------- every agent
@pytest.mark.parametrize("name", AGENTS.names())
def test_every_agent_writes_the_common_outputs(tmp_path, name):
    cfg = _cfg(tmp_path, agent=name, episodes=3, warmup=1)
    env = ToyCompressionEnv()
    rec = SearchRecorder(tmp_path, agent=name, episodes=3, seed=0, base_accuracy=env.base_accuracy,
                         config=cfg.to_dict(), tensorboard=False, plot=False)
    agent = AGENTS.get(name)(env, cfg, rec)
    agent.run(3)
    summary = rec.close(interrupted=agent.interrupted, extra=agent.summary_extra())
    # searches run all 3 episodes; fixed policies (presets) may need fewer evaluations
    assert 1 <= summary["episodes"] <= 3 and not summary["interrupted"]
    assert [r["episode"] for r in read_episodes(tmp_path / "episodes.csv")] == list(range(1, summary["episodes"] + 1))
    assert Policy.load(tmp_path / "best_policy.json").search["agent"] == name
    assert rec.best is not None and rec.best.reward == summary["best_reward"]
