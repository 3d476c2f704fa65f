"""Network slimming: the L1 penalty on norm scales, its subgradient, training with it, the CLI flag."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from amc.cli import main
from amc.errors import AmcError
from amc.slimming import norm_scales, scale_values, slimming_penalty
from amc.training import TrainConfig, train


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.gn(self.bn(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def _net() -> _BNNet:
    torch.manual_seed(0)
    m = _BNNet()
    with torch.no_grad():
        m.bn.weight.uniform_(-1, 1)
        m.bn.weight[0] = 0.0  # a scale at 0: subgradient 0
    return m


def test_penalty_is_lambda_times_l1_and_its_subgradient() -> None:
    m = _net()
    lam = 1e-2
    scales = norm_scales(m)
    assert [s is p for s, p in zip(scales, (m.bn.weight, m.gn.weight))] == [True, True]
    expected = lam * (m.bn.weight.abs().sum() + m.gn.weight.abs().sum())
    pen = slimming_penalty(m, lam)
    assert torch.equal(pen, lam * torch.stack([m.bn.weight.abs().sum(), m.gn.weight.abs().sum()]).sum())
    assert float(pen.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    x = torch.randn(4, 1, 6, 6)
    base = m(x).square().mean()
    g0 = torch.autograd.grad(base, [m.bn.weight, m.gn.weight])
    g1 = torch.autograd.grad(m(x).square().mean() + slimming_penalty(m, lam), [m.bn.weight, m.gn.weight])
    for a, b, p in zip(g0, g1, (m.bn.weight, m.gn.weight)):
        torch.testing.assert_close(b - a, lam * torch.sign(p.detach()), rtol=0, atol=1e-7)
    assert float(g1[0][0] - g0[0][0]) == 0.0
    assert float(slimming_penalty(m, 0.0)) == 0.0
    assert float(slimming_penalty(nn.Linear(2, 2), 1.0)) == 0.0 and scale_values(nn.Linear(2, 2)).numel() == 0


def _one_step(slimming: float, digits, tmp_path) -> _BNNet:
    m = _net()
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=16, lr=0.1, momentum=0.0, nesterov=False,
                      weight_decay=0.0, schedule="constant", augment=False, device="cpu", eval_test=False,
                      slimming=slimming)
    train(m, digits, cfg, run_dir=tmp_path / f"s{slimming}")
    return m


def test_training_step_moves_scales_by_lr_lambda_sign(digits, tmp_path) -> None:
    """One SGD step with slimming = the same step without it minus lr * lambda * sign(gamma)."""
    g0 = _net().bn.weight.detach().clone()
    plain, slim = _one_step(0.0, digits, tmp_path), _one_step(0.05, digits, tmp_path)
    torch.testing.assert_close(slim.bn.weight - plain.bn.weight, -0.1 * 0.05 * torch.sign(g0), rtol=0, atol=1e-6)
    torch.testing.assert_close(slim.conv.weight, plain.conv.weight)  # other parameters: unchanged
    events = list((tmp_path / "s0.05").glob("events.out.tfevents.*"))
    assert events and b"slimming/scales" in events[0].read_bytes()
    assert b"slimming/scales" not in next((tmp_path / "s0.0").glob("events.out.tfevents.*")).read_bytes()


def test_slimming_shrinks_the_scales(digits, tmp_path) -> None:
    def trained(lam: float) -> float:
        m = _net()
        cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=False, device="cpu", eval_test=False,
                          weight_decay=0.0, slimming=lam)
        train(m, digits, cfg, run_dir=tmp_path / f"t{lam}")
        return float(scale_values(m).mean())

    assert trained(0.02) < 0.7 * trained(0.0)


@pytest.mark.parametrize("bad", [-1e-4, float("nan"), True])
def test_bad_lambda_is_rejected(bad) -> None:
    with pytest.raises(AmcError, match="slimming"):
        TrainConfig(slimming=bad)


def test_cli_rejects_a_negative_lambda(tmp_path, capsys) -> None:
    rc = main(["train", "--model", "lenet5", "--dataset", "digits", "--slimming", "-0.1", "--epochs", "1",
               "--run-dir", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "slimming" in err and len(err.splitlines()) == 1


def test_threshold_policy_meets_the_budget_and_drops_small_scales() -> None:
    from amc.compress import apply_policy
    from amc.models import ModelSpec, build_model, example_input
    from amc.pruning import Pruner
    from amc.slimming import threshold_policy

    spec = ModelSpec("resnet20", num_classes=10, in_channels=1, image_size=(8, 8))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():
        for s in norm_scales(model):
            s.copy_(torch.rand_like(s) + 0.5)
        model.layer1[0].bn1.weight[:8] = 0.01  # a block's inner group: these channels go first
    x = example_input(spec)
    pol = threshold_policy(model, x, macs_ratio=0.5, model_spec=spec.to_dict())
    cost = Pruner(model, x).cost_model()
    keep = [g.channels / g.total for g in pol.groups]
    assert cost.macs(keep) / cost.base_macs <= 0.5 + 1e-9
    assert cost.macs(None) > cost.macs(keep) > 0.35 * cost.macs(None)  # the smallest threshold: tight
    assert pol.pruning["importance"] == "bn_scale"
    inner = next(g for g in pol.groups if g.layers[0] == "layer1.0.conv1")
    assert inner.channels <= 8  # the 0.01 scales are the smallest of all: dropped before any other
    pruned = apply_policy(model, pol, example_input=x)
    assert pruned(x).shape == (1, 10)
    with pytest.raises(AmcError, match="macs_ratio"):
        threshold_policy(model, x, macs_ratio=0.0)
    with pytest.raises(AmcError, match="norm layer"):
        threshold_policy(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)),
                         torch.zeros(1, 1, 8, 8), macs_ratio=0.5)
