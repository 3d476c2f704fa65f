"""Zoo check: torchvision families and a user's own model prune end to end with exact costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amc.graph import LayerGraph
from amc.models import ModelSpec, build_model, example_input
from amc.pruning import Pruner
from amc.zoo import FAMILIES, check_model, entry, independent_count, markdown_table, random_feasible_policy

# one member per hard structure, each a second or so at 32x32 on one core: grouped convs (RegNet),
# channel shuffle + split (ShuffleNetV2), SE gates + depthwise (MobileNetV3), concatenations (SqueezeNet)
FAST = ["regnet_x_400mf", "shufflenet_v2_x0_5", "mobilenet_v3_small", "squeezenet1_1"]


@pytest.mark.parametrize("name", FAST)
def test_fast_zoo_subset(name: str) -> None:
    res = check_model(entry(name))
    assert res.status == "ok", res.status
    assert res.decisions > 5
    assert res.macs_ratio <= max(0.5, res.lowest_ratio) * (1 + 1e-9)
    assert res.macs_ratio < 0.9  # the random policy really pruned


@pytest.mark.slow
@pytest.mark.parametrize("zoo_entry", FAMILIES, ids=[e.name for e in FAMILIES])
def test_every_family(zoo_entry) -> None:
    res = check_model(zoo_entry)
    if zoo_entry.unsupported:
        assert res.status.startswith("not supported: ") and zoo_entry.unsupported in res.status
    else:
        assert res.status == "ok", res.status


@pytest.mark.parametrize(("name", "reachable"), [("resnext50_32x4d", 0.3), ("regnet_x_400mf", 0.3)])
def test_grouped_conv_families_reach_030(name: str, reachable: float) -> None:
    spec = ModelSpec(f"torchvision:{name}", num_classes=10, in_channels=3, image_size=(32, 32))
    model = build_model(spec)
    pruner = Pruner(model, example_input(spec))
    grouped = {ly.name for ly in pruner.graph.layers if ly.kind == "grouped"}
    assert grouped
    slotted = [g for g in pruner.graph.groups if g.unit > 1]
    assert {n for g in slotted for n in g.layers} >= grouped  # every grouped conv is pruned
    res = check_model(entry(name), target=reachable)
    assert res.ok, res.status
    assert res.lowest_ratio <= reachable and res.macs_ratio <= reachable * (1 + 1e-9)


def test_markdown_table_lists_each_result() -> None:
    res = [check_model(entry("squeezenet1_1"))]
    table = markdown_table(res)
    assert table.count("\n") == 2 and "`squeezenet1_1`" in table and "| ok |" in table


# ------------------------------------------------------------------------------ the user's model
USER = "tests._user_models:mixed_cnn"


def _user_model() -> tuple[torch.nn.Module, torch.Tensor]:
    spec = ModelSpec(USER, num_classes=10, in_channels=1, image_size=(8, 8))
    return build_model(spec).eval(), example_input(spec)


def test_user_model_graph_prunes_every_structure() -> None:
    model, x = _user_model()
    g = LayerGraph.build(model, x)
    kinds = {ly.name: ly.kind for ly in g.layers}
    assert kinds["grouped.0"] == "grouped" and kinds["dw.0"] == "depthwise"
    by_leader = {grp.leader: grp for grp in g.groups}
    assert by_leader["reduce.0"].unit == 4 and by_leader["grouped.0"].unit == 4  # 4 conv groups
    stream = next(grp for grp in g.groups if "stem.0" in grp.out_layers)
    assert {"expand.0", "dw.0"} <= set(stream.out_layers)  # the residual add and the depthwise conv
    assert {"se.fc1", "pw.0"} <= set(stream.in_layers)  # the SE gate reads the stream
    assert "se.fc2" in stream.out_layers  # ... and its gate multiplies it channel by channel
    assert set(by_leader["branch_a.0"].in_layers) == {"mix.0"}  # concatenated into mix


def test_user_model_costs_are_exact_for_random_policies() -> None:
    model, x = _user_model()
    pruner = Pruner(model, x)
    cost = pruner.cost_model()
    rng = np.random.default_rng(0)
    for target in (0.3, 0.5, 0.8):
        keep = random_feasible_policy(cost, target, rng=rng)
        pruned = pruner.prune(keep)
        macs, params = independent_count(pruned, x)
        assert cost.macs(keep) == pytest.approx(macs, rel=1e-9) and macs <= target * cost.base_macs * (1 + 1e-9)
        assert cost.params(keep) == pytest.approx(params, rel=1e-9)
        grouped = dict(pruned.named_modules())["grouped.0"]
        assert grouped.groups == 4 and grouped.in_channels % 4 == 0 and grouped.out_channels % 4 == 0


def test_grouped_consumer_is_reconstructed_per_group() -> None:
    model, x = _user_model()
    torch.manual_seed(0)
    cal = torch.randn(64, 1, 8, 8)
    pruner = Pruner(model, x)
    keep = [0.5 if g.leader == "reduce.0" else 1.0 for g in pruner.graph.groups]
    plain = pruner.prune(keep)
    rec = pruner.prune(keep, reconstruct=True, calibration=cal)
    g_plain, g_rec = dict(plain.named_modules())["grouped.0"], dict(rec.named_modules())["grouped.0"]
    assert not torch.equal(g_plain.weight, g_rec.weight)  # the grouped consumer was solved
    with torch.no_grad():
        ref = model.grouped(model.reduce(model.stem(cal)))
        err_plain = (plain.grouped(plain.reduce(plain.stem(cal))) - ref).pow(2).mean()
        err_rec = (rec.grouped(rec.reduce(rec.stem(cal))) - ref).pow(2).mean()
    assert err_rec < err_plain


def test_user_model_searches_at_half_the_macs_on_digits(tmp_path) -> None:
    from agents.search import SearchConfig, run_search

    cfg = SearchConfig(model=USER, dataset="digits", target="macs=0.5", episodes=4, warmup=2, train_epochs=1,
                       run_dir=str(tmp_path / "run"), device="cpu", threads=1)
    summary = run_search(cfg)
    assert summary["episodes"] == 4
    assert summary["achieved"]["macs_ratio"] <= 0.5 + 1e-6
    assert (tmp_path / "run" / "best_policy.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnext50_32x4d", "regnet_x_400mf", "shufflenet_v2_x0_5"])
def test_real_search_meets_macs_030(name: str, tmp_path) -> None:
    from agents.search import SearchConfig, run_search

    cfg = SearchConfig(model=f"torchvision:{name}", dataset="digits", target="macs=0.3", episodes=3, warmup=2,
                       train_epochs=1, run_dir=str(tmp_path / "run"), device="cpu", threads=1)
    summary = run_search(cfg)
    assert summary["achieved"]["macs_ratio"] <= 0.3 + 1e-6


@pytest.mark.parametrize("importance", ["l1", "l2", "fpgm", "bn_scale", "random"])
def test_every_importance_ranks_slots(importance: str) -> None:
    model, x = _user_model()
    pruner = Pruner(model, x)
    ranks = pruner.ranking(importance)
    for g, r in zip(pruner.graph.groups, ranks):
        assert sorted(r.tolist()) == list(range(g.channels))  # a permutation of the group's slots
    pruned = pruner.prune([0.5] * len(ranks), importance=importance)
    assert pruned(x).shape == (1, 10)
