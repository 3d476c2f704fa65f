"""CompressionEnv: Gymnasium contract, budget always met, determinism, rewards, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from amc.compress import apply_policy
from amc.errors import AmcError
from amc.training import load_checkpoint
from envs import ENV_ID, OBS_FEATURES, REWARDS, CompressionEnv, EnvConfig
from tests._paths import LENET_DIGITS


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    """The committed LeNet-5 trained on digits (98.3% val top-1)."""
    return load_checkpoint(LENET_DIGITS)[0].eval()


def run_episode(env: CompressionEnv, actions, seed: int = 0):
    obs, _ = env.reset(seed=seed)
    observations = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(np.array([a], dtype=np.float32))
        observations.append(obs)
        if terminated:
            return reward, info, observations
    raise AssertionError("episode did not end")


CASES = [
    dict(target="macs=0.5"),
    dict(target="params=0.3", round_to=4),
    dict(target="macs=0.4", reconstruct=True, calibration_size=128),
    dict(target="params=0.3", granularity="fine"),
    dict(mode="quant", target="size=0.1"),
    dict(mode="quant", target="bitops=0.02"),
    dict(mode="joint", target="bitops=0.01"),
    dict(mode="joint", target="size=0.05"),
    dict(mode="joint", granularity="fine", target="size=0.05", lbound=0.05),
]


@pytest.mark.parametrize("kwargs", CASES, ids=[c["target"] + "-" + c.get("mode", c.get("granularity", "prune"))
                                               for c in CASES])
def test_every_episode_meets_the_budget(kwargs, lenet, digits) -> None:
    env = CompressionEnv(lenet, digits, EnvConfig(**kwargs))
    metric, ratio = env.config.metric, env.config.ratio
    key = {"macs": "macs_ratio", "params": "params_ratio", "size": "size_ratio", "bitops": "bitops_ratio"}[metric]
    rng = np.random.default_rng(0)
    for episode in range(6):
        actions = np.ones(env.n_decisions) if episode == 0 else rng.random(env.n_decisions)
        reward, info, obs = run_episode(env, actions)
        m = info["metrics"]
        assert m[key] <= ratio + 1e-9, (episode, m)
        assert 0.0 <= m["accuracy"] <= 100.0
        assert all(o.shape == (len(OBS_FEATURES),) and o.dtype == np.float32 for o in obs)
        assert all((o >= 0).all() and (o <= 1).all() for o in obs)
        assert len(info["actions"]) == env.n_decisions
        assert all(0.0 <= a <= 1.0 for a in info["actions"])
        for ly in info["policy"].layers:
            for bits, (lo, hi) in ((ly.w_bits, env.config.w_bits), (ly.a_bits, env.config.a_bits)):
                assert hi <= 8
                assert bits is None or lo <= bits <= 8
    # with all-ones actions the clipping is what meets the budget, and tightly
    if env.config.mode == "prune" and env.config.granularity == "channel" and env.config.round_to == 1:
        _, info, _ = run_episode(env, np.ones(env.n_decisions))
        assert info["metrics"][key] > ratio * 0.8


def test_prune_mode_decisions_and_info(lenet, digits) -> None:
    env = CompressionEnv(lenet, digits, EnvConfig(target="macs=0.5"))
    assert env.n_decisions == len(env.graph.groups) == 4
    assert env.decision_kinds == ["prune"] * 4
    assert env.base_accuracy > 85
    reward, info, _ = run_episode(env, [1.0, 1.0, 1.0, 1.0])
    assert reward == pytest.approx(info["metrics"]["accuracy"] * 0.01)
    assert set(info["timing"]) >= {"prune", "reconstruct", "evaluate"}
    policy = info["policy"]
    assert policy.budget["metric"] == "macs" and policy.accuracy["val_top1"] == info["metrics"]["accuracy"]
    assert [g.layers[0] for g in policy.groups] == ["conv1", "conv2", "fc1", "fc2"]
    # a later-layer-only budget: the first decisions were clipped so that the budget holds
    assert policy.achieved["macs_ratio"] <= 0.5 + 1e-9


@pytest.mark.parametrize("target", ["bitops", "size"])
def test_joint_space_contains_the_quant_only_space(target, lenet, digits) -> None:
    # at the cost of uniform 4-bit, keeping every channel is affordable by bits alone (down to 2 bits):
    # the channel clip must leave it open even when the earlier layers asked for 8 bits
    quant = CompressionEnv(lenet, digits, EnvConfig(mode="quant", target=f"{target}=1.0", proxy="vanilla"))
    ratio = quant.uniform_bits_ratio(4)
    env = CompressionEnv(lenet, digits, EnvConfig(mode="joint", target=f"{target}={ratio:.6f}", proxy="vanilla"))
    _, info, _ = run_episode(env, np.ones(env.n_decisions))
    policy = info["policy"]
    assert all(g.keep_ratio == 1.0 for g in policy.groups), [g.keep_ratio for g in policy.groups]
    assert info["metrics"][f"{target}_ratio"] <= ratio + 1e-9
    assert min(ly.w_bits for ly in policy.layers if ly.w_bits) < 8  # HAQ's walk met the budget


def test_same_seed_same_episode(lenet, digits) -> None:
    env = CompressionEnv(lenet, digits, EnvConfig(mode="joint", target="bitops=0.02"))
    actions = np.random.default_rng(1).random(env.n_decisions)
    r1, i1, o1 = run_episode(env, actions, seed=5)
    r2, i2, o2 = run_episode(env, actions, seed=5)
    assert r1 == r2 and i1["policy"].to_dict() == i2["policy"].to_dict()
    assert all(np.array_equal(a, b) for a, b in zip(o1, o2))


def test_apply_policy_reproduces_the_reward(lenet, digits) -> None:
    env = CompressionEnv(lenet, digits, EnvConfig(target="macs=0.4", reconstruct=True, calibration_size=128))
    _, info, _ = run_episode(env, np.random.default_rng(2).random(env.n_decisions))
    x_val, y_val = digits.tensors("val")
    cal = digits.calibration_batches(1, 128, seed=0)[0][0]
    model = apply_policy(lenet, info["policy"], example_input=x_val[:1], calibration=cal)
    acc = env.evaluate(model)
    assert acc == info["metrics"]["accuracy"]


def test_bf16_reward_tracks_the_fp32_reward(lenet, digits) -> None:
    actions = np.random.default_rng(3).random(4)
    fp32 = CompressionEnv(lenet, digits, EnvConfig(target="macs=0.6"))
    bf16 = CompressionEnv(lenet, digits, EnvConfig(target="macs=0.6", eval_precision="bf16"))
    _, i32, _ = run_episode(fp32, actions)
    _, i16, _ = run_episode(bf16, actions)
    p32, p16 = i32["policy"].to_dict(), i16["policy"].to_dict()
    assert p32["layers"] == p16["layers"]  # precision changes the measurement only
    assert abs(i16["metrics"]["accuracy"] - i32["metrics"]["accuracy"]) <= 2.0  # 300 val images: <= 6 flips
    assert abs(bf16.base_accuracy - fp32.base_accuracy) <= 2.0
    with pytest.raises(AmcError, match="mode 'prune' only"):
        EnvConfig(mode="quant", target="size=0.1", eval_precision="bf16")
    with pytest.raises(AmcError, match="eval_precision=.int4.: valid: fp32, bf16, fp16"):
        EnvConfig(eval_precision="int4")


def test_gymnasium_and_sb3_checkers(lenet, digits) -> None:
    env = CompressionEnv(lenet, digits, EnvConfig(target="macs=0.5"))
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    made = gym.make(ENV_ID, model=lenet, splits=digits, config=EnvConfig(target="macs=0.6"))
    obs, _ = made.reset(seed=0)
    assert obs.shape == (len(OBS_FEATURES),)


@pytest.mark.parametrize("reward", REWARDS.names())
def test_every_reward(reward, lenet, digits) -> None:
    env = CompressionEnv(lenet, digits, EnvConfig(target="macs=0.5", reward=reward))
    r, info, _ = run_episode(env, [0.7] * env.n_decisions)
    assert np.isfinite(r)
    if reward == "acc_latency":
        assert info["metrics"]["latency_ms"] > 0


def test_bad_input(lenet, digits) -> None:
    with pytest.raises(AmcError, match="unreachable.*lower --lbound"):
        CompressionEnv(lenet, digits, EnvConfig(target="macs=0.01"))
    with pytest.raises(AmcError, match="use one of: size=, bitops="):
        EnvConfig(mode="quant", target="macs=0.5")
    with pytest.raises(AmcError, match=r"\(0, 1\]"):
        EnvConfig(target="macs=1.5")
    with pytest.raises(AmcError, match="METRIC=RATIO"):
        EnvConfig(target="half")
    with pytest.raises(ValueError, match="valid: acc, acc_flops"):
        EnvConfig(reward="speed")
    with pytest.raises(AmcError, match="valid: prune, quant, joint"):
        EnvConfig(mode="distill")
    with pytest.raises(AmcError, match="unknown env option"):
        EnvConfig.from_dict({"target": "macs=0.5", "lr": 1})


@pytest.mark.parametrize("mode,target", [("quant", "size=0.1"), ("joint", "bitops=0.02")])
def test_apply_policy_reproduces_the_reward_quant(mode, target, lenet, digits) -> None:
    """The search builds its models through a cache of weight codes and float-model activation
    statistics; a fresh apply_policy (no cache, as `amc apply` does) must give the same model."""
    env = CompressionEnv(lenet, digits, EnvConfig(mode=mode, target=target))
    rng = np.random.default_rng(3)
    infos = [run_episode(env, rng.random(env.n_decisions))[1] for _ in range(6)]
    if mode == "quant":  # the float statistics were gathered once; codes and scales reused
        assert env.quant_cache.info()["models"] == 1 and env.quant_cache.misses["stats"] == 1
        assert env.quant_cache.hits["weights"] > 0 and env.quant_cache.hits["scales"] > 0
    x_val, _ = digits.tensors("val")
    for info in infos[-3:]:
        model = apply_policy(lenet, info["policy"], splits=digits)
        assert env.evaluate(model) == info["metrics"]["accuracy"]
        cached = apply_policy(env.model, info["policy"], pruner=env.pruner, quant_calibration=env.quant_calibration,
                              calibration=env.calibration, quant_cache=env.quant_cache, proxy_data=env.proxy_data)
        with torch.no_grad():
            assert torch.equal(cached(x_val), model(x_val))


@pytest.mark.parametrize("mode,target", [("quant", "bitops=0.03"), ("quant", "size=0.15"), ("joint", "bitops=0.03")])
def test_bit_budgets_are_relative_to_float32_and_tight(mode, target, lenet, digits) -> None:
    env = CompressionEnv(lenet, digits, EnvConfig(mode=mode, target=target))
    metric, ratio = env.config.metric, env.config.ratio
    base = env.cost.base_bitops if metric == "bitops" else env.cost.base_size_bits
    assert env.base_cost == pytest.approx(base)  # every layer at 32 bits, first/last included
    _, info, _ = run_episode(env, np.ones(env.n_decisions))  # as many bits as allowed
    achieved = info["metrics"][f"{metric}_ratio"]
    assert 0.85 * ratio < achieved <= ratio + 1e-9


@pytest.mark.parametrize("mode,target", [("quant", "bitops=0.03"), ("joint", "bitops=0.03"), ("joint", "size=0.1")])
def test_budget_band_holds_for_bits(mode, target, lenet, digits) -> None:
    """A budget band raises bit widths as it raises kept channels: random episodes that choose bits end near the
    budget (as near as LeNet's few, coarse bit steps allow), where without it many end far under."""
    metric, ratio = target.split("=")[0], float(target.split("=")[1])
    lowest = {}
    for band in (0.0, 0.03):
        env = CompressionEnv(lenet, digits, EnvConfig(mode=mode, target=target, budget_band=band, eval_limit=32))
        rng = np.random.default_rng(0)
        ratios = [run_episode(env, rng.random(env.n_decisions))[1]["metrics"][f"{metric}_ratio"] for _ in range(10)]
        assert max(ratios) <= ratio + 1e-9
        lowest[band] = min(ratios)
    assert lowest[0.03] >= 0.9 * ratio and lowest[0.0] < 0.8 * ratio
