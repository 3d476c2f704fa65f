"""Structured pruning, importance criteria, LS reconstruction and magnitude pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from amc.budget import bisect
from amc.cost import CostModel
from amc.errors import AmcError
from amc.models import MODELS, ModelSpec, build_model, example_input
from amc.pruning import IMPORTANCES, Pruner, magnitude_prune, prune
from amc.training import load_checkpoint
from amc.zoo import independent_count
from tests._paths import LENET_DIGITS

REFERENCE = LENET_DIGITS


def uniform_keep_for(cm: CostModel, target: float) -> list[float]:
    """The largest uniform keep ratio whose MACs ratio is <= target (bisection)."""
    n = len(cm.graph.groups)
    lo, _ = bisect(lambda r: cm.macs([r] * n) / cm.base_macs <= target, 0.01, 1.0, steps=30)
    return [lo] * n


@pytest.mark.parametrize("name", MODELS.names())
def test_prune_every_model_at_30_50_70(name: str) -> None:
    spec = ModelSpec(name, num_classes=10, in_channels=3, image_size=(16, 16))
    model = build_model(spec).eval()
    x = example_input(spec, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = Pruner(model, x)
    cm = pruner.cost_model()
    prev = cm.base_macs
    for target in (0.7, 0.5, 0.3):
        keep = uniform_keep_for(cm, target)
        pruned = pruner.prune(keep)
        macs, _ = independent_count(pruned, x)
        assert macs == cm.macs(keep)
        assert macs <= target * cm.base_macs * 1.01 and macs < prev
        prev = macs
        with torch.no_grad():
            assert pruned(x).shape == (2, 10)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input model is untouched


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """The committed LeNet-5 trained on digits (98.3% val top-1)."""
    return load_checkpoint(REFERENCE)[0].eval()


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean() * 100)


def test_reconstruction_lowers_error_and_keeps_accuracy(trained, digits) -> None:
    x_val, y_val = digits.tensors("val")
    cal = digits.calibration_batches(1, 512, seed=0)[0][0]
    pruner = Pruner(trained, x_val[:1])
    keep = [0.5, 0.35, 0.3, 0.3]
    plain = pruner.prune(keep)
    rec = pruner.prune(keep, reconstruct=True, calibration=cal)
    assert pruner.timing.reconstruct > 0
    with torch.no_grad():
        ref = trained(x_val)
        err_plain = (plain(x_val) - ref).pow(2).mean()
        err_rec = (rec(x_val) - ref).pow(2).mean()
    assert err_rec < 0.7 * err_plain
    base = _acc(trained, x_val, y_val)
    assert base > 90
    assert _acc(rec, x_val, y_val) > _acc(plain, x_val, y_val)


def test_same_seed_same_result(trained, digits) -> None:
    x = digits.tensors("val")[0][:8]
    a = Pruner(trained, x, seed=3).prune([0.5] * 4, importance="random")
    b = Pruner(trained, x, seed=3).prune([0.5] * 4, importance="random")
    c = Pruner(trained, x, seed=4).prune([0.5] * 4, importance="random")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("importance", IMPORTANCES.names())
def test_every_importance(importance: str, trained, digits) -> None:
    x = digits.tensors("val")[0][:4]
    pruner = Pruner(trained, x)
    pruned = pruner.prune([0.5] * 4, importance=importance)
    assert pruned(x).shape == (4, 10)
    ranks = pruner.ranking(importance)
    assert [sorted(r.tolist()) for r in ranks] == [list(range(g.channels)) for g in pruner.graph.groups]


def test_l1_keeps_the_largest_channels(trained, digits) -> None:
    x = digits.tensors("val")[0][:4]
    pruner = Pruner(trained, x)
    kept = pruner.kept_indices([0.5, 1, 1, 1])[0]
    norms = trained.conv1.weight.abs().sum((1, 2, 3)) + trained.conv2.weight.abs().sum((0, 2, 3))
    assert set(kept.tolist()) == set(torch.topk(norms, 3).indices.tolist())


def test_bad_inputs(trained) -> None:
    x = torch.randn(1, 1, 8, 8)
    pruner = Pruner(trained, x)
    with pytest.raises(AmcError, match=r"group 1 \(conv2\).*\(0, 1\]"):
        pruner.prune([0.5, 1.5, 1, 1])
    with pytest.raises(AmcError, match="4 prunable groups"):
        pruner.prune([0.5])
    with pytest.raises(ValueError, match="valid: bn_scale, fpgm, l1, l2, random"):
        pruner.prune([0.5] * 4, importance="taylor")
    with pytest.raises(AmcError, match="calibration"):
        Pruner(trained, x).prune([0.5] * 4, reconstruct=True)


def test_one_shot_prune_helper(trained) -> None:
    x = torch.randn(2, 1, 8, 8)
    pruned = prune(trained, [0.5] * 4, example_input=x, round_to=4)
    assert pruned.conv2.out_channels == 8 and pruned.fc1.out_features == 60


def test_magnitude_prune(trained) -> None:
    pruned = magnitude_prune(trained, {"fc1": 0.8, "conv2": 0.5})
    assert float((pruned.fc1.weight == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    assert float((pruned.conv2.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert float((trained.fc1.weight == 0).float().mean()) == 0.0
    kept = magnitude_prune(trained, {"fc1": 0.5}, persistent=True)
    assert hasattr(kept.fc1, "weight_mask")
    with pytest.raises(AmcError, match="not found"):
        magnitude_prune(trained, {"nope": 0.5})
    assert np.isclose(float((kept.fc1.weight == 0).float().mean()), 0.5, atol=0.01)
