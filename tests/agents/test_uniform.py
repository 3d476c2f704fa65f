"""Uniform and preset baselines: tight bisection to the budget through the real env, few evaluations."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agents import AGENTS, SearchConfig, SearchRecorder, read_episodes, run_search
from agents._base import play_episode
from agents.uniform import PROFILES, UniformAgent, profile_weights, uniform_actions
from amc.errors import AmcError
from amc.policy import Policy
from amc.training import load_checkpoint
from amc.transfer import uniform_policy
from envs import CompressionEnv, EnvConfig
from tests._paths import LENET_DIGITS

REF = LENET_DIGITS


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(REF)[0]


def _agent(tmp_path, model, digits, *, name="uniform", mode="prune", target="macs=0.5", episodes=50, **kw):
    env = CompressionEnv(model, digits, EnvConfig(mode=mode, target=target, **kw))
    cfg = SearchConfig(checkpoint=str(REF), agent=name, mode=mode, target=target, episodes=episodes,
                       run_dir=str(tmp_path))
    rec = SearchRecorder(tmp_path, agent=name, episodes=episodes, seed=0, base_accuracy=env.base_accuracy,
                         target=target, config=cfg.to_dict(), tensorboard=False, plot=False)
    return AGENTS.get(name)(env, cfg, rec), env, rec


def _clipped(agent: UniformAgent, env: CompressionEnv, scale: float) -> bool:
    """An independent check, on the cost model instead of the env's clip: does the profile at ``scale``,
    taken as it is, cost more than the budget?"""
    return env.cost_of(agent.actions_at(scale)) > env.target_cost * (1 + 1e-9)


@pytest.mark.parametrize(("mode", "target", "metric"), [
    ("prune", "macs=0.5", "macs_ratio"),
    ("prune", "params=0.3", "params_ratio"),
    ("quant", "size=0.15", "size_ratio"),
    ("joint", "bitops=0.05", "bitops_ratio"),
])
def test_uniform_meets_the_budget_tightly(tmp_path, model, digits, mode, target, metric):
    agent, env, rec = _agent(tmp_path, model, digits, mode=mode, target=target)
    agent.run(50)
    summary = rec.close(extra=agent.summary_extra())
    ratio = float(target.split("=")[1])
    assert agent.converged and summary["evaluations"] <= 12
    pol = Policy.load(tmp_path / "best_policy.json")
    assert pol.achieved[metric] <= ratio + 1e-9
    cands = agent.candidates()
    i = cands.index(agent.scale)
    assert not _clipped(agent, env, cands[i])
    assert i == len(cands) - 1 or _clipped(agent, env, cands[i + 1])  # the next policy on the path is over budget
    # the policy is uniform: one action everywhere, so one bit width per kind / the same requested keep ratio
    assert len(set(agent.actions_at(agent.scale))) == 1
    if mode == "quant":
        searched = [ly for ly in pol.layers[1:-1]]  # first and last stay at 8 bits (HAQ)
        assert len({ly.w_bits for ly in searched}) == 1
    rows = read_episodes(tmp_path / "episodes.csv")
    assert len(rows) == 1 and rows[0][metric] <= ratio + 1e-9 and rows[0]["phase"] == "uniform"
    assert summary["episodes"] == 1 and len(summary["probes"]) == summary["evaluations"]


def test_uniform_prune_ratio_is_the_largest_feasible(tmp_path, model, digits):
    agent, env, rec = _agent(tmp_path, model, digits)
    agent.run(50)
    keep = env.config.lbound + agent.scale * (1 - env.config.lbound)
    # every group kept ceil(keep * channels): the same ratio everywhere, up to channel rounding
    pol = Policy.load(tmp_path / "best_policy.json")
    for g in pol.groups:
        assert g.channels == int(np.ceil(keep * g.total - 1e-6))
    assert pol.achieved["macs_ratio"] > 0.4


@pytest.mark.parametrize("target", ["macs=0.5", "params=0.3"])
def test_the_agent_and_uniform_policy_are_one_baseline(tmp_path, model, digits, target):
    """The agent (through the env) and amc.transfer.uniform_policy (on the cost model alone, no data)
    find the same policy: the largest common keep ratio in [lbound, 1] that meets the budget."""
    agent, env, rec = _agent(tmp_path, model, digits, target=target)
    agent.run(50)
    found = Policy.load(tmp_path / "best_policy.json")
    direct = uniform_policy(model, env.val_x[:1], target)
    assert [g.channels for g in found.groups] == [g.channels for g in direct.groups]
    assert found.achieved[f"{target.split('=')[0]}_ratio"] == pytest.approx(direct.achieved[f"{target.split('=')[0]}_ratio"])


def test_preset_deep_prunes_deeper_layers_more(tmp_path, model, digits):
    agent, env, rec = _agent(tmp_path, model, digits, name="preset:deep")
    agent.run(50)
    actions = agent.actions_at(agent.scale)
    assert actions == sorted(actions, reverse=True) and actions[0] > actions[-1]
    pol = Policy.load(tmp_path / "best_policy.json")
    assert pol.achieved["macs_ratio"] <= 0.5 + 1e-9 and pol.search["agent"] == "preset:deep"
    cands = agent.candidates()
    i = cands.index(agent.scale)
    assert i == len(cands) - 1 or _clipped(agent, env, cands[i + 1])


def test_profiles_and_presets_are_registered():
    assert {"uniform", "deep", "ends"} <= set(PROFILES.names())
    assert {"uniform", "preset:deep", "preset:ends"} <= set(AGENTS.names())
    w = profile_weights("deep", 5, ["prune"] * 5)
    assert w[0] == 1.0 and w[-1] == 0.5 and np.all(np.diff(w) < 0)
    with pytest.raises(ValueError, match="unknown profile 'zigzag'; valid: .*deep"):
        profile_weights("zigzag", 3, ["prune"] * 3)


def test_episodes_cap_the_evaluations(tmp_path, model, digits, caplog):
    agent, env, rec = _agent(tmp_path, model, digits, episodes=2)
    with caplog.at_level(logging.WARNING):
        agent.run(2)
    summary = rec.close(extra=agent.summary_extra())
    assert agent.evaluations in (2, 3) and not agent.converged and not agent.interrupted
    assert summary["episodes"] == 1 and summary["achieved"]["macs_ratio"] <= 0.5 + 1e-9
    assert "before the bisection converged" in caplog.text


def test_uniform_through_run_search_writes_the_standard_outputs(tmp_path):
    summary = run_search(SearchConfig(checkpoint=str(REF), dataset="digits", agent="uniform", target="macs=0.5",
                                      episodes=50, device="cpu", run_dir=str(tmp_path)))
    for name in ("config.yaml", "summary.json", "best_policy.json", "best_policy.png", "episodes.csv"):
        assert (tmp_path / name).is_file()
    assert list((tmp_path / "search").glob("events.out.tfevents.*"))
    assert summary["agent"] == "uniform" and summary["converged"] and summary["episodes"] == 1
    assert summary["achieved"]["macs_ratio"] <= 0.5 + 1e-9 and summary["best_accuracy"] > 50
    # resuming redoes the (cheap, deterministic) bisection: same result, one history
    again = run_search(SearchConfig(checkpoint=str(REF), dataset="digits", agent="uniform", target="macs=0.5",
                                    episodes=50, device="cpu", run_dir=str(tmp_path), resume=True))
    assert again["scale"] == summary["scale"] and again["episodes"] == summary["episodes"]
    assert [r["episode"] for r in read_episodes(tmp_path / "episodes.csv")] == [1]


def test_unknown_option_is_refused(tmp_path, model, digits):
    with pytest.raises(AmcError, match="unknown uniform option"):
        env = CompressionEnv(model, digits, EnvConfig())
        cfg = SearchConfig(checkpoint=str(REF), agent="uniform", agent_kwargs={"bisect": 3}, run_dir=str(tmp_path))
        UniformAgent(env, cfg, SearchRecorder(tmp_path, agent="uniform", tensorboard=False, plot=False))


@pytest.mark.parametrize(("mode", "target"), [("prune", "macs=0.5"), ("prune", "params=0.3"), ("quant", "size=0.15")])
def test_uniform_actions_give_the_uniform_agents_policy_without_evaluating(tmp_path, model, digits, mode, target):
    agent, env, rec = _agent(tmp_path, model, digits, mode=mode, target=target)
    agent.run(50)
    rec.close(extra=agent.summary_extra())
    found = agent.actions_at(agent.scale)
    actions = uniform_actions(env)
    free = [d.kind == "a_bits" and target.startswith("size") for d in env.decisions]  # size ignores activations
    assert len({a for a, f in zip(actions, free) if not f}) == 1  # one action for everything the budget prices
    assert all(a == 1.0 for a, f in zip(actions, free) if f)  # and the widest value for the rest
    # at least as tight as the agent's bisection over its grid of scales (it can find a step narrower than the grid)
    assert env.cost_of(found) <= env.cost_of(actions) <= env.target_cost * (1 + 1e-9)
    info = play_episode(env, actions)  # the env takes it as it is
    assert np.allclose(info["actions"], actions, atol=1e-6)


def test_uniform_actions_in_joint_mode_keep_channels_when_bits_alone_fit(model, digits):
    space = dict(w_bits=(2, 8), a_bits=(2, 8))
    probe = CompressionEnv(model, digits, EnvConfig(mode="joint", target="bitops=0.5", **space))
    w4a4 = probe.uniform_bits_ratio(4)
    env = CompressionEnv(model, digits, EnvConfig(mode="joint", target=f"bitops={w4a4}", **space))
    pol = play_episode(env, uniform_actions(env))["policy"]
    assert all(g.channels == g.total for g in pol.groups)  # every channel kept
    assert {(ly.w_bits, ly.a_bits) for ly in pol.layers[1:-1]} == {(4, 4)}  # uniform W4A4 (ends at 8 bits)
    assert pol.achieved["bitops_ratio"] == pytest.approx(w4a4)
    # under what 2-bit weights and activations cost, channels must go too: both shrink together
    env = CompressionEnv(model, digits, EnvConfig(mode="joint", target=f"bitops={probe.uniform_bits_ratio(2) * 0.6}",
                                                  **space))
    actions = uniform_actions(env)
    pol = play_episode(env, actions)["policy"]
    assert len(set(actions)) == 1 and any(g.channels < g.total for g in pol.groups)
    assert env.cost_of(actions) <= env.target_cost


def test_uniform_actions_leave_what_the_budget_does_not_price_at_its_widest(model, digits):
    space = dict(w_bits=(2, 8), a_bits=(2, 8))
    w4 = CompressionEnv(model, digits, EnvConfig(mode="joint", target="size=0.5", **space)).uniform_bits_ratio(4, metric="size")
    env = CompressionEnv(model, digits, EnvConfig(mode="joint", target=f"size={w4}", **space))
    pol = play_episode(env, uniform_actions(env))["policy"]  # size counts weights only: W4A8, every channel kept
    assert all(g.channels == g.total for g in pol.groups)
    assert {(ly.w_bits, ly.a_bits) for ly in pol.layers[1:-1]} == {(4, 8)}
    assert pol.achieved["size_ratio"] == pytest.approx(w4)
    env = CompressionEnv(model, digits, EnvConfig(mode="joint", target="macs=0.5", **space))
    actions = uniform_actions(env)  # MACs do not see bits: uniform channels at W8A8
    pol = play_episode(env, actions)["policy"]
    assert {(ly.w_bits, ly.a_bits) for ly in pol.layers} == {(8, 8)}
    assert any(g.channels < g.total for g in pol.groups) and env.cost_of(actions) <= env.target_cost
    assert len({a for a, d in zip(actions, env.decisions) if d.kind == "prune"}) == 1
