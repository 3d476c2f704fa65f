"""Cost model: analytic costs equal PyTorch's own count (``FlopCounterMode``) on really pruned models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amc.cost import CostModel, kept_channels
from amc.errors import AmcError
from amc.models import MODELS, ModelSpec, build_model, example_input
from amc.pruning import Pruner
from amc.zoo import independent_count  # PyTorch's FlopCounterMode: an oracle that shares no code with amc
from tests._tiny_models import TinyDenseNet, TinyGrouped


def test_kept_channels_rounding() -> None:
    assert kept_channels(0.5, 16) == 8
    assert kept_channels(0.3, 10) == 3  # no float noise: 0.3 * 10 is not rounded up to 4
    assert kept_channels(0.01, 16) == 1
    assert kept_channels(0.3, 64, round_to=8) == 24
    assert kept_channels(0.01, 64, round_to=8) == 8
    assert kept_channels(0.99, 20, round_to=8) == 20  # capped at the total
    with pytest.raises(AmcError, match=r"\(0, 1\]"):
        kept_channels(1.5, 16)
    with pytest.raises(AmcError):
        kept_channels(0.0, 16)


def _models():
    for name in MODELS.names():
        if name in ("resnet110", "vgg16"):
            continue  # same code paths as resnet56 / vgg11, only slower
        spec = ModelSpec(name, num_classes=10, in_channels=3, image_size=(16, 16))
        yield name, build_model(spec).eval(), example_input(spec)
    yield "densenet", TinyDenseNet().eval(), TinyDenseNet.example_inputs()
    yield "grouped", TinyGrouped().eval(), TinyGrouped.example_inputs()


@pytest.mark.parametrize("round_to", [1, 8])
def test_analytic_costs_match_direct_count(round_to: int) -> None:
    rng = np.random.default_rng(0)
    for name, model, x in _models():
        pruner = Pruner(model, x)
        cm = CostModel(pruner.graph, model, round_to=round_to)
        base_macs, base_params = independent_count(model, x)
        assert cm.macs() == base_macs and cm.params() == base_params, name
        for _ in range(2):
            keep = rng.uniform(0.1, 1.0, len(pruner.graph.groups))
            pruned = pruner.prune(keep, round_to=round_to)
            macs, params = independent_count(pruned, x)
            assert cm.macs(keep) == macs and cm.params(keep) == params, name
            assert pruned(x).shape == (len(x), 10)


def test_bits_costs() -> None:
    model = build_model("lenet5", num_classes=10, in_channels=1, image_size=(28, 28))
    pruner = Pruner(model, torch.randn(1, 1, 28, 28))
    cm = pruner.cost_model()
    n = len(pruner.graph.layers)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert cm.size_bits() == weights * 32
    assert cm.size_bits(w_bits=[4] * n) == weights * 4
    assert cm.bitops(w_bits=[8] * n, a_bits=[8] * n) == cm.macs() * 64
    r = cm.ratios([0.5] * len(pruner.graph.groups), w_bits=[4] * n, a_bits=[4] * n)
    assert r["size_ratio"] < 0.125 and r["bitops_ratio"] < r["macs_ratio"] / 64 + 1e-12
    assert cm.size_bits(w_bits={"conv1": 2}) < cm.size_bits()
    with pytest.raises(AmcError, match="bit widths"):
        cm.size_bits(w_bits=[4])
    with pytest.raises(AmcError, match="prunable groups"):
        cm.macs([0.5])


def test_grouped_conv_rounding_and_exact_costs() -> None:
    """Slots of a grouped conv: round_to applies to real channels (multiples of round_to and of the
    group count), lbound to slots, and the analytic costs equal an independent count exactly."""
    from tests._user_models import mixed_cnn

    model = mixed_cnn(in_channels=1, width=32).eval()  # reduce/grouped: 64 channels in 4 conv groups
    x = torch.randn(1, 1, 8, 8)
    pruner = Pruner(model, x)
    reduce = next(g for g in pruner.graph.groups if g.leader == "reduce.0")
    assert (reduce.unit, reduce.channels) == (4, 16)
    assert reduce.slot_round_to(8) == 2 and reduce.slot_round_to(3) == 3 and reduce.slot_round_to(1) == 1
    for round_to in (1, 8):
        cm = CostModel(pruner.graph, model, round_to=round_to)
        keep = [0.3] * len(pruner.graph.groups)
        pruned = pruner.prune(keep, round_to=round_to)
        conv = dict(pruned.named_modules())["grouped.0"]
        assert conv.in_channels % (4 * round_to // np.gcd(4, round_to)) == 0 and conv.groups == 4
        assert conv.in_channels == 4 * cm.channels(keep)[reduce.index]
        macs, params = independent_count(pruned, x)
        assert cm.macs(keep) == pytest.approx(macs, rel=1e-12) and cm.params(keep) == pytest.approx(params, rel=1e-12)
