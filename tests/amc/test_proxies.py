"""Evaluation proxies: each proxy's contract, caching, the fixed calibration set, apply reproducing
the search's score, the budget band."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from amc.compress import apply_policy, inputs_for_policy
from amc.errors import AmcError
from amc.models import ModelSpec, build_model
from amc.policy import Policy
from amc.proxies import (
    ProxyData,
    apply_proxy,
    kd_steps,
    parse_proxy,
    recalibrate_norm,
    resolve_proxy,
)
from amc.training import TrainConfig, load_checkpoint, save_checkpoint, train
from envs import CompressionEnv, EnvConfig
from tests._paths import LENET_DIGITS


@pytest.fixture(scope="module")
def resnet(digits, tmp_path_factory) -> nn.Module:
    """A ResNet-20 (BatchNorm everywhere) trained briefly on digits."""
    torch.manual_seed(0)
    spec = ModelSpec.for_data("resnet20", digits)
    model = build_model(spec)
    train(model, digits, TrainConfig(epochs=2, lr=0.05, batch_size=64, device="cpu", num_threads=1, eval_test=False),
          run_dir=tmp_path_factory.mktemp("r20"), model_spec=spec)
    return model.eval()


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    return load_checkpoint(LENET_DIGITS)[0].eval()


def _episode(env: CompressionEnv, actions) -> dict:
    env.reset()
    for a in actions:
        _, _, done, _, info = env.step(np.array([a], dtype=np.float32))
        if done:
            return info
    raise AssertionError("episode did not end")


def test_parse_proxy_names():
    assert parse_proxy("BN").bn and not parse_proxy("bn").reconstruct
    p = parse_proxy("reconstruct+bn")
    assert p.reconstruct and p.bn and p.ft_steps == 0
    assert parse_proxy("ft:20").ft_steps == 20 and parse_proxy("ft:20").name == "ft:20"
    assert not parse_proxy("vanilla").needs_calibration
    for bad in ("ft:0", "ft", "adabn", "ft:x"):
        with pytest.raises(AmcError, match="valid: vanilla, bn"):
            parse_proxy(bad)


def test_auto_picks_reconstruct_when_channels_are_chosen_else_bn_or_vanilla(resnet, lenet):
    assert resolve_proxy("auto", resnet).name == "reconstruct"
    assert resolve_proxy("auto", lenet).name == "reconstruct"
    assert resolve_proxy("auto", resnet, prunes_channels=False).name == "bn"
    assert resolve_proxy("auto", lenet, prunes_channels=False).name == "vanilla"
    assert resolve_proxy("vanilla", resnet).name == "vanilla"
    # channels and bits together: reconstruction, then the norm statistics the quantizers shifted
    assert resolve_proxy("auto", resnet, quantizes=True).name == "reconstruct+bn"
    assert resolve_proxy("auto", lenet, quantizes=True).name == "reconstruct"
    assert resolve_proxy("auto", resnet, prunes_channels=False, quantizes=True).name == "bn"


def test_recalibrate_norm_sets_the_calibration_statistics_and_nothing_else(resnet, digits):
    model = apply_policy(resnet, _uniform_policy(resnet, digits, 0.5), example_input=digits.tensors("val")[0][:1])
    params = {k: v.clone() for k, v in model.named_parameters()}
    x = digits.calibration_batches(1, 200, seed=0)[0][0]
    recalibrate_norm(model, x, batch_size=64)
    assert not model.training
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]), k  # weights and BN affine parameters untouched
    # oracle: the first BatchNorm's running mean is the mean of conv1's output over the images
    conv, bn = model.conv1, model.bn1
    with torch.no_grad():
        feats = conv(x)
    assert torch.allclose(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-5)  # batches of 64, 64, 64, 8
    assert bn.momentum == 0.1  # the training momentum comes back
    recalibrate_norm(model, x, batch_size=200)  # one batch: the variance is the images' too
    assert torch.allclose(bn.running_var, feats.var((0, 2, 3), unbiased=True), rtol=1e-4)


def test_kd_steps_train_the_student_only_and_are_deterministic(resnet, digits):
    base = {k: v.clone() for k, v in resnet.state_dict().items()}
    proxy = parse_proxy("ft:3")
    data = ProxyData(images=digits.calibration_batches(1, 64, 0)[0][0], teacher=resnet,
                     ft_batches=digits.calibration_batches(2, 32, 1))
    policy = _uniform_policy(resnet, digits, 0.5)
    example = digits.tensors("val")[0][:1]
    a = apply_proxy(apply_policy(resnet, policy, example_input=example), proxy, data)
    first_logits = data._teacher_logits
    b = apply_proxy(apply_policy(resnet, policy, example_input=example), proxy, data)
    assert data._teacher_logits is first_logits  # the teacher's logits are computed once
    for k, v in resnet.state_dict().items():
        assert torch.equal(v, base[k]), k  # the teacher is not trained
    plain = apply_policy(resnet, policy, example_input=example)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), plain.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(AmcError, match="fine-tuning batches"):
        kd_steps(plain, ProxyData(images=data.images, teacher=resnet), 2)


def _uniform_policy(model, digits, keep):
    env = CompressionEnv(model, digits, EnvConfig(target="macs=1.0", proxy="vanilla"))
    info = _episode(env, [(keep - 0.2) / 0.8] * env.n_decisions)
    return info["policy"]


@pytest.mark.parametrize("proxy", ["bn", "reconstruct+bn", "ft:4"])
def test_apply_reproduces_the_score_of_each_proxy(proxy, resnet, digits):
    env = CompressionEnv(resnet, digits, EnvConfig(target="macs=0.5", proxy=proxy, calibration_size=96))
    rng = np.random.default_rng(0)
    infos = [_episode(env, rng.random(env.n_decisions)) for _ in range(2)]
    images = env.proxy_data.images
    assert env.proxy_data is not None and env.proxy_data.images is images  # drawn once, reused
    for info in infos:
        pol = info["policy"]
        assert pol.scoring.proxy == proxy and pol.scoring.calibration_size == 96
        # as amc apply does it: inputs drawn afresh from the policy's record, a new Pruner
        inputs = inputs_for_policy(pol, digits, device="cpu", teacher=resnet)
        model = apply_policy(resnet, pol, example_input=digits.tensors("val")[0][:1], **inputs.kwargs())
        assert env.evaluate(model) == info["metrics"]["accuracy"]
        assert info["timing"]["proxy"] > 0


def test_bn_proxy_moves_the_score_and_changes_no_weight(resnet, digits):
    actions = np.random.default_rng(1).random(20)
    van = CompressionEnv(resnet, digits, EnvConfig(target="macs=0.4", proxy="vanilla"))
    bn = CompressionEnv(resnet, digits, EnvConfig(target="macs=0.4", proxy="bn"))
    a, b = _episode(van, actions), _episode(bn, actions)
    assert a["policy"].groups == b["policy"].groups
    pol, pol_v = b["policy"], a["policy"]
    m_v = apply_policy(resnet, pol_v, pruner=van.pruner)
    m_b = apply_policy(resnet, pol, pruner=bn.pruner, proxy_data=bn.proxy_data)
    for (k, p), q in zip(m_v.named_parameters(), m_b.parameters()):
        assert torch.equal(p, q), k
    assert any(not torch.equal(x, y) for (n, x), y in zip(m_v.named_buffers(), m_b.buffers()) if "running" in n)
    with pytest.raises(AmcError, match="proxy bn needs calibration images"):
        apply_policy(resnet, pol, pruner=bn.pruner)


def test_calibration_images_do_not_depend_on_the_search_seed(lenet, digits):
    cfgs = [EnvConfig(target="macs=0.5", proxy="reconstruct", seed=s) for s in (0, 3)]
    envs = [CompressionEnv(lenet, digits, c) for c in cfgs]
    assert torch.equal(envs[0].calibration, envs[1].calibration)
    actions = np.random.default_rng(2).random(envs[0].n_decisions)
    r = [_episode(e, actions)["metrics"]["accuracy"] for e in envs]
    assert r[0] == r[1]
    other = CompressionEnv(lenet, digits, EnvConfig(target="macs=0.5", proxy="reconstruct", calibration_seed=5))
    assert not torch.equal(other.calibration, envs[0].calibration)


def test_reconstruct_switch_still_works(lenet, digits):
    assert EnvConfig(reconstruct=True).proxy == "reconstruct"
    assert EnvConfig(reconstruct=False).proxy == "vanilla"
    assert EnvConfig(proxy="bn", reconstruct=True).proxy == "bn"
    with pytest.raises(AmcError, match="unknown proxy"):
        EnvConfig(proxy="bogus")
    with pytest.raises(AmcError, match="needs mode prune"):
        CompressionEnv(lenet, digits, EnvConfig(mode="quant", target="size=0.2", proxy="reconstruct"))


def test_policy_without_a_proxy_record_loads_as_before(lenet, digits):
    env = CompressionEnv(lenet, digits, EnvConfig(target="macs=0.5", proxy="vanilla"))
    doc = _episode(env, [0.3] * env.n_decisions)["policy"].to_dict()
    del doc["scoring"]
    doc.update(version=1, pruning={**doc["pruning"], "reconstruct": False})  # version 1, from before the proxies
    pol = Policy.from_dict(doc)
    assert pol.scoring.proxy == "vanilla"
    model = apply_policy(lenet, pol, pruner=env.pruner)
    assert env.evaluate(model) == pytest.approx(_episode(env, [0.3] * env.n_decisions)["metrics"]["accuracy"])


@pytest.mark.parametrize("band", [0.0, 0.03])
def test_budget_band(band, resnet, digits):
    env = CompressionEnv(resnet, digits, EnvConfig(target="macs=0.5", proxy="vanilla", budget_band=band))
    rng = np.random.default_rng(0)
    ratios = [_episode(env, rng.random(env.n_decisions))["metrics"]["macs_ratio"] for _ in range(12)]
    assert max(ratios) <= 0.5 + 1e-9
    if band:
        assert min(ratios) >= 0.5 * (1 - band) - 1e-9
    else:
        assert min(ratios) < 0.5 * (1 - 0.03)  # AMC's one-sided clip leaves episodes far under the budget
    with pytest.raises(AmcError, match="budget_band"):
        EnvConfig(budget_band=1.5)


def test_checkpointed_model_searches_with_reconstruct_by_default(resnet, digits, tmp_path):
    from agents.search import SearchConfig, run_search

    spec = ModelSpec.for_data("resnet20", digits)
    ckpt = save_checkpoint(tmp_path / "r20.pt", model=resnet, model_spec=spec)
    cfg = SearchConfig(checkpoint=str(ckpt), dataset="digits", agent="random", episodes=2, warmup=0,
                       target="macs=0.6", run_dir=str(tmp_path / "run"), device="cpu", budget_band=0.05)
    run_search(cfg)
    pol = Policy.load(tmp_path / "run" / "best_policy.json")
    assert pol.scoring.proxy == "reconstruct" and pol.achieved["macs_ratio"] >= 0.6 * 0.95 - 1e-9
    assert pol.scoring.val_images == len(digits.val) and pol.scoring.eval_precision == "fp32"
