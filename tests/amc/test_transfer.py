"""Policy transfer: by name (same / wider model), by depth within stages (resnet20 -> resnet32), the
budget re-enforced on the target, and the errors for models that cannot be mapped."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from amc.compress import apply_policy
from amc.cost import CostModel, kept_channels
from amc.errors import AmcError
from amc.graph import LayerGraph
from amc.models import ModelSpec, build_model, example_input
from amc.policy import GroupDecision, LayerDecision, Policy
from amc.transfer import policy_costs, stage_keys, transfer_policy, uniform_policy
from amc.zoo import independent_count

R20 = ModelSpec("resnet20", image_size=(16, 16))
R32 = ModelSpec("resnet32", image_size=(16, 16))


@pytest.fixture(scope="module")
def r20() -> tuple[nn.Module, LayerGraph]:
    m = build_model(R20).eval()
    return m, LayerGraph.build(m, example_input(R20))


@pytest.fixture(scope="module")
def r32() -> tuple[nn.Module, LayerGraph]:
    m = build_model(R32).eval()
    return m, LayerGraph.build(m, example_input(R32))


def _policy(graph: LayerGraph, ratios, *, spec: ModelSpec = R20, budget: dict | None = None,
            bits: list[tuple[int | None, int | None]] | None = None) -> Policy:
    groups = []
    for g, r in zip(graph.groups, ratios):
        ch = kept_channels(r, g.channels)
        groups.append(GroupDecision(g.layers, ch / g.channels, ch, g.channels))
    bits = bits or [(None, None)] * len(graph.layers)
    layers = [LayerDecision(ly.name, ly.kind, w, a) for ly, (w, a) in zip(graph.layers, bits)]
    return Policy(model=spec.to_dict(), mode="joint" if any(w for w, _ in bits) else "prune", groups=groups,
                  layers=layers, budget=budget or {}, pruning={"lbound": 0.2, "round_to": 1},
                  accuracy={"val_top1": 80.0}, search={"agent": "ddpg", "episode": 7})


def test_stage_keys_of_a_cifar_resnet(r20):
    _, g = r20
    gk, lk = stage_keys(g)
    # stem group (residual-coupled with layer1's conv2s), then layer1's three inner convs ...
    assert gk[:4] == [("conv", 0, "shared")] + [("conv", 0, "single")] * 3
    assert gk[4:6] == [("conv", 1, "single"), ("conv", 1, "shared")]  # layer2.0.conv1, layer2.0.conv2 (+shortcut)
    assert {k[:2] for k in gk} == {("conv", 0), ("conv", 1), ("conv", 2)}
    assert lk[-1] == ("fc", "linear")


def test_same_architecture_other_weights_maps_by_name(r20):
    m, g = r20
    pol = _policy(g, np.linspace(0.3, 0.9, len(g.groups)))
    other = build_model(R20)  # other weights
    out = transfer_policy(pol, other, example_input(R20), target_spec=R20)
    assert out.search["transfer"]["method"] == "name"
    assert [gd.channels for gd in out.groups] == [gd.channels for gd in pol.groups]
    assert out.search["agent"] == "ddpg" and out.search["transfer"]["source_accuracy"] == {"val_top1": 80.0}
    assert out.accuracy == {}  # the source's accuracy does not apply to the target
    apply_policy(other, out, example_input=example_input(R20))  # and it applies


def test_wider_sibling_keeps_ratios(r20):
    m, g = r20
    pol = _policy(g, [0.5] * len(g.groups))
    wide = ModelSpec("resnet20", image_size=(16, 16), kwargs={"width_mult": 2.0})
    target = build_model(wide)
    out = transfer_policy(pol, target, example_input(wide), target_spec=wide)
    assert out.search["transfer"]["method"] == "name"
    assert [gd.total for gd in out.groups] == [2 * gd.total for gd in pol.groups]
    assert all(gd.keep_ratio == 0.5 for gd in out.groups)


def test_deeper_sibling_maps_by_relative_depth_within_stages(r20, r32):
    _, g20 = r20
    m32, g32 = r32
    # stage 0: stem 1.0, inner convs 0.3 .. 0.9; stages 1 and 2 constant
    ratios = [1.0, 0.3, 0.6, 0.9, 0.5, 0.75, 0.5, 0.5, 0.25, 1.0, 0.25, 0.25]
    pol = _policy(g20, ratios)
    out = transfer_policy(pol, m32, example_input(R32), target_spec=R32)
    tr = out.search["transfer"]
    assert (tr["method"], tr["stages"]) == ("depth", "spatial")
    keep = {gd.layers[0]: gd.keep_ratio for gd in out.groups}
    assert len(out.groups) == len(g32.groups) == 18
    assert keep["conv1"] == 1.0  # the stem/residual group maps onto its counterpart
    # layer1 inner convs 0..4 at relative depth 0, .25, .5, .75, 1 between the source's 5, 10, 15 of 16
    assert [keep[f"layer1.{i}.conv1"] for i in range(5)] == [5 / 16, 8 / 16, 10 / 16, 13 / 16, 15 / 16]
    assert keep["layer2.0.conv2"] == 0.75 and all(keep[f"layer2.{i}.conv1"] == 0.5 for i in range(5))
    assert keep["layer3.0.conv2"] == 1.0 and keep["layer3.4.conv1"] == 0.25
    assert out.model == R32.to_dict()
    # no budget in the policy: nothing scaled, achieved cost reported
    assert "multiplier" not in tr and out.achieved["macs_ratio"] == pytest.approx(
        CostModel(g32, m32).ratios([gd.keep_ratio for gd in out.groups])["macs_ratio"])


@pytest.mark.parametrize("target", [0.5, 0.35])
def test_budget_holds_after_transfer(r20, r32, target):
    m20, g20 = r20
    m32, g32 = r32
    rng = np.random.default_rng(0)
    ratios = rng.uniform(0.4, 1.0, len(g20.groups))
    pol = _policy(g20, ratios, budget={"metric": "macs", "ratio": target, "target": f"macs={target}"})
    out = transfer_policy(pol, m32, example_input(R32), target_spec=R32)
    tr = out.search["transfer"]
    assert tr["cost_before"]["macs_ratio"] > target  # the mapped policy was over budget ...
    assert out.achieved["macs_ratio"] <= target + 1e-9  # ... and now it holds
    assert 0 < tr["multiplier"] < 1
    # checked on the really pruned model, by PyTorch's FlopCounterMode
    pruned = apply_policy(m32, out, example_input=example_input(R32))
    x = example_input(R32)
    assert independent_count(pruned, x)[0] / independent_count(m32, x)[0] == pytest.approx(out.achieved["macs_ratio"])
    assert policy_costs(out, g32, m32)["macs_ratio"] == pytest.approx(out.achieved["macs_ratio"])
    # ratios only go down, and never below min(lbound, source ratio)
    plain = transfer_policy(Policy.from_dict({**pol.to_dict(), "budget": {}}), m32, example_input(R32))
    for a, b in zip(out.groups, plain.groups):
        assert a.channels <= b.channels and a.keep_ratio >= min(0.2, b.keep_ratio) - 1 / a.total


def test_uniform_policy_meets_the_budget_with_one_ratio(r32):
    m32, g32 = r32
    pol = uniform_policy(m32, example_input(R32), "macs=0.5", model_spec=R32)
    ratios = {round(gd.keep_ratio, 1) for gd in pol.groups}
    assert len(ratios) == 1  # one common ratio (up to channel rounding)
    assert 0.45 < pol.achieved["macs_ratio"] <= 0.5 and pol.budget["target"] == "macs=0.5"
    assert pol.search["agent"] == "uniform" and pol.search["keep_ratio"] == pytest.approx(0.69, abs=0.02)
    with pytest.raises(AmcError, match="macs= or params= budgets"):
        uniform_policy(m32, example_input(R32), "size=0.5")


def test_unreachable_budget_and_budget_override(r20, r32):
    _, g20 = r20
    m32, _ = r32
    pol = _policy(g20, [0.5] * len(g20.groups), budget={"metric": "macs", "ratio": 0.01})
    with pytest.raises(AmcError, match="cannot be met on the target .*lower bound"):
        transfer_policy(pol, m32, example_input(R32))
    out = transfer_policy(pol, m32, example_input(R32), budget="macs=0.3")
    assert out.achieved["macs_ratio"] <= 0.3 and out.budget["ratio"] == 0.3
    lat = _policy(g20, [0.5] * len(g20.groups), budget={"metric": "latency", "ratio": 0.5})
    with pytest.raises(AmcError, match="latency budget cannot be re-enforced"):
        transfer_policy(lat, m32, example_input(R32))


def test_bits_transfer_and_size_budget(r20, r32):
    m20, g20 = r20
    m32, g32 = r32
    n = len(g20.layers)
    bits = [(8, None)] + [(6, 6)] * (n - 2) + [(8, 8)]
    pol = _policy(g20, [1.0] * len(g20.groups), bits=bits, budget={"metric": "size", "ratio": 0.15})
    assert policy_costs(pol, g20, m20)["size_ratio"] > 0.15
    out = transfer_policy(pol, m32, example_input(R32), target_spec=R32)
    w = [ly.w_bits for ly in out.layers]
    assert w[0] == 8 and out.layers[-1].a_bits == 8  # first/last map onto first/last
    assert out.layers[0].a_bits is None
    assert all(1 <= b <= 8 for b in w)
    assert out.search["transfer"]["bits_lowered"] > 0 and out.achieved["size_ratio"] <= 0.15 + 1e-9
    assert out.search["transfer"]["multiplier"] == 1.0  # bits alone met the budget (HAQ's rule)


def test_quantization_only_policy_is_never_pruned_by_the_budget(r20, r32):
    _, g20 = r20
    m32, _ = r32
    n = len(g20.layers)
    pol = _policy(g20, [1.0] * len(g20.groups), bits=[(4, 4)] * n, budget={"metric": "size", "ratio": 0.1})
    pol.mode = "quant"
    out = transfer_policy(pol, m32, example_input(R32))
    assert all(gd.keep_ratio == 1.0 for gd in out.groups) and out.achieved["size_ratio"] <= 0.1
    pol.budget = {"metric": "size", "ratio": 0.01}  # below 2 bits everywhere
    with pytest.raises(AmcError, match="by lowering bits alone"):
        transfer_policy(pol, m32, example_input(R32))


def test_policy_without_a_buildable_spec_uses_name_prefixes(r20, r32):
    _, g20 = r20
    m32, _ = r32
    pol = _policy(g20, [0.5] * len(g20.groups))
    pol.model = {"name": "CifarResNet"}  # what a search records when it does not know the spec
    out = transfer_policy(pol, m32, example_input(R32))
    assert out.search["transfer"]["stages"] == "prefix"
    assert all(gd.keep_ratio == 0.5 for gd in out.groups)


def test_models_that_cannot_be_mapped(r20):
    _, g20 = r20
    pol = _policy(g20, [0.5] * len(g20.groups))
    lenet = ModelSpec("lenet5", in_channels=3, image_size=(16, 16))
    with pytest.raises(AmcError, match="stage structure .* differs.*not siblings"):
        transfer_policy(pol, build_model(lenet), example_input(lenet))
    vgg = ModelSpec("vgg11", image_size=(16, 16))
    with pytest.raises(AmcError, match="3 stage\\(s\\) of prunable groups but the target has 5"):
        transfer_policy(pol, build_model(vgg), example_input(vgg))
    m32 = build_model(R32)
    with pytest.raises(AmcError, match="by name: the target's prunable groups led by \\['layer1.3.conv1'"):
        transfer_policy(pol, m32, example_input(R32), method="name")
    with pytest.raises(AmcError, match="unknown transfer method"):
        transfer_policy(pol, m32, example_input(R32), method="magic")
    broken = _policy(g20, [0.5] * len(g20.groups), spec=ModelSpec("resnet32", image_size=(16, 16)))
    with pytest.raises(AmcError, match="does not match the model it says it was found on"):
        transfer_policy(broken, m32, example_input(R32), method="depth")
