"""The budget rules (amc.budget): bisection, AMC's clip with the band, HAQ's floor and walk, the common
multiplier on hand-checkable cases; then the env and transfer, which both use them, agreeing on random
policies of two small models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from amc.budget import amc_clip, bisect, bit_floors, last_true, limit, lower_bits, scale_to_budget
from amc.compress import apply_policy
from amc.cost import kept_channels
from amc.graph import LayerGraph, count_macs_params
from amc.models import ModelSpec, build_model, example_input
from amc.policy import Policy
from amc.transfer import policy_costs, transfer_policy
from envs import CompressionEnv, EnvConfig

# --------------------------------------------------------------------------------------------------
# bisection


def test_integer_bisection_finds_the_last_true_index_in_log_steps():
    calls: list[int] = []

    def below_seven(i: int) -> bool:
        calls.append(i)
        return i < 7

    assert bisect(below_seven, -1, 20) == (6, 7)
    assert len(calls) <= math.ceil(math.log2(21)) and -1 not in calls and 20 not in calls  # ends are never probed
    assert last_true(20, below_seven) == 6
    assert last_true(5, lambda i: True) == 4
    assert last_true(5, lambda i: False) == -1
    assert last_true(0, lambda i: True) == -1


def test_float_bisection_and_the_stop_callback():
    lo, hi = bisect(lambda x: x * x < 2.0, 0.0, 2.0, steps=50)
    assert lo <= math.sqrt(2.0) <= hi and hi - lo == pytest.approx(2.0 / 2**50)
    calls: list[int] = []

    def probe(i: int) -> bool:
        calls.append(i)
        return i < 70

    lo, hi = bisect(probe, 0, 100, stop=lambda: len(calls) >= 2)  # a cap of two probes
    assert calls == [50, 75] and (lo, hi) == (50, 75)


def test_limit_is_the_relative_tolerance():
    assert limit(100.0) == pytest.approx(100.0 + 1e-7)
    assert limit(math.inf) == math.inf


# --------------------------------------------------------------------------------------------------
# AMC's clip, one decision that keeps c of 8 channels (cost c, in steps of 2); the undecided
# decisions add 1 at their most aggressive and 3 when they keep everything


ALLOWED = [2, 4, 6, 8]


def _lowest(c: int) -> float:
    return c + 1.0


def _highest(c: int) -> float:
    return c + 3.0


@pytest.mark.parametrize(("want", "target", "expected"), [
    (8, 7.0, 6),  # c + 1 <= 7: at most 6
    (4, 7.0, 4),  # a smaller request is kept
    (6, 7.0, 6),
    (8, 9.0, 8),  # nothing to clip
    (8, 2.0, 2),  # unreachable even at the smallest: the smallest (the env checked reachability)
    (2, 7.0, 2),
])
def test_amc_clip_upper_bound(want, target, expected):
    assert amc_clip(ALLOWED, want, lowest_cost=_lowest, target=target) == (expected, False)


@pytest.mark.parametrize(("want", "band", "expected"), [
    (2, 0.2, (4, True)),  # the band asks that c + 3 can reach 7 * 0.8 = 5.6: c = 4, raised
    (6, 0.2, (6, False)),  # 6 + 3 >= 5.6 already
    (4, 0.0, (4, False)),  # no band
])
def test_amc_clip_band_lower_bound(want, band, expected):
    assert amc_clip(ALLOWED, want, lowest_cost=_lowest, highest_cost=_highest, target=7.0, band=band) == expected


def test_amc_clip_band_is_capped_by_the_budget():
    # target 8: at most 6 (6 + 1 <= 8 < 8 + 1); the band wants c + 1.2 >= 7.6, i.e. 8: capped at 6
    assert amc_clip(ALLOWED, 2, lowest_cost=_lowest, highest_cost=lambda c: c + 1.2, target=8.0,
                    band=0.05) == (6, True)


def test_amc_clip_band_needs_the_highest_cost():
    with pytest.raises(ValueError, match="highest_cost"):
        amc_clip(ALLOWED, 2, lowest_cost=_lowest, target=7.0, band=0.2)


# --------------------------------------------------------------------------------------------------
# HAQ


@pytest.mark.parametrize(("w", "a", "lowest", "expected"), [
    ([8, 6, 32], [4, 32, 8], (2, 2), (2, 2)),  # HAQ's 2 bits; float entries do not count
    ([1, 4], [3, 3], (2, 2), (1, 2)),  # a 1-bit weight search may go back to 1 bit; activations did not
    ([5, 6], [8, 8], (3, 4), (3, 4)),  # the space's b_min
    ([2, 6], [8, 8], (3, 4), (2, 4)),
    ([32, 32], [32, 32], (2, 2), (2, 2)),
])
def test_bit_floor_rule(w, a, lowest, expected):
    assert bit_floors(w, a, lowest=lowest) == expected


def test_lower_bits_walks_last_to_first_activations_first():
    w, a = np.array([8.0, 8.0, 8.0]), np.array([8.0, 8.0, 8.0])

    def over() -> bool:  # cost = total bits, budget 44 (of 48)
        return w.sum() + a.sum() > 44

    assert lower_bits([2, 1, 0], w, a, floors=(2, 2), over=over) == 4
    assert w.tolist() == [8, 7, 7] and a.tolist() == [8, 7, 7]
    assert lower_bits([2, 1, 0], w, a, floors=(2, 2), over=over) == 0  # already within


def test_lower_bits_respects_floors_and_float_widths():
    w, a = np.array([32.0, 3.0, 4.0]), np.array([32.0, 2.0, 5.0])

    def over() -> bool:
        return True  # never enough: the walk ends when nothing can be lowered

    lowered = lower_bits([2, 1, 0], w, a, floors=(3, 2), over=over)
    assert w.tolist() == [32, 3, 3] and a.tolist() == [32, 2, 2]
    assert lowered == 3 + 1  # activations 5 -> 2, weights 4 -> 3


# --------------------------------------------------------------------------------------------------
# the common multiplier


def test_scale_to_budget_hand_case():
    base = np.array([1.0, 0.5, 0.1])
    m, r = scale_to_budget(base, lbound=0.2, fits=lambda x: x.sum() <= 1.0)
    # max(m, .2) + max(.5 m, .2) + .1 = 1  ->  1.5 m = .9  ->  m = .6 (the .1 stays: never raised)
    assert m == pytest.approx(0.6) and r == pytest.approx([0.6, 0.3, 0.1])
    assert scale_to_budget(base, lbound=0.2, fits=lambda x: x.sum() <= 2.0) == (1.0, pytest.approx(base))
    assert scale_to_budget(base, lbound=0.2, fits=lambda x: x.sum() <= 0.4) is None  # floors sum to 0.5


# --------------------------------------------------------------------------------------------------
# env and transfer agree


SPECS = {"lenet5": {}, "resnet20": {}}


@pytest.fixture(scope="module", params=sorted(SPECS))
def model_and_spec(request, digits):
    torch.manual_seed(0)
    spec = ModelSpec.for_data(request.param, digits, kwargs=SPECS[request.param])
    return build_model(spec).eval(), spec


def _env(model, spec, digits, **kw) -> CompressionEnv:
    return CompressionEnv(model, digits, EnvConfig(proxy="vanilla", eval_limit=32, calibration_size=16, **kw),
                          model_spec=spec.to_dict())


def play_episode(env: CompressionEnv, actions, *, seed: int = 0) -> dict:
    """The last step's ``info`` of one episode through the Gymnasium API."""
    env.reset(seed=seed)
    for a in actions:
        *_, info = env.step(np.array([a], dtype=np.float32))
    return info


def _raw_policy(env: CompressionEnv, played: Policy, actions: np.ndarray) -> Policy:
    """``played`` with the values ``actions`` ask for before any budget rule (the search space's own
    mapping: keep ratio to channels by ``kept_channels``, bits as the space gives them)."""
    raw = Policy.from_dict(played.to_dict())
    round_to = env.config.round_to
    by_group = {tuple(g.layers): g for g in raw.groups}
    for d, a in zip(env.decisions, actions):
        value = env.spaces[d.kind].to_value(float(a))
        if d.kind == "prune":
            g = by_group[tuple(env.graph.groups[d.group].layers)]
            g.channels = kept_channels(value, g.total, env.graph.groups[d.group].slot_round_to(round_to))
            g.keep_ratio = g.channels / g.total
        else:
            layer = raw.layers[d.layer]
            setattr(layer, d.kind, int(value))
    return raw


def _channels(policy: Policy) -> list[int]:
    return [g.channels for g in policy.groups]


def _bits(policy: Policy) -> list[tuple[int | None, int | None]]:
    return [(ly.w_bits, ly.a_bits) for ly in policy.layers]


@pytest.mark.parametrize("target", ["macs=0.5", "params=0.4"])
def test_env_and_transfer_agree_on_random_prune_policies(model_and_spec, digits, target):
    model, spec = model_and_spec
    env = _env(model, spec, digits, target=target, round_to=2)
    x = example_input(spec)
    graph = LayerGraph.build(model, x)
    metric, ratio = target.split("=")[0], float(target.split("=")[1])
    rng = np.random.default_rng(0)
    within = 0
    for k in range(6):
        actions = rng.uniform(0.0, 1.0, env.n_decisions) if k else np.ones(env.n_decisions) * 0.3
        info = play_episode(env, actions, seed=0)
        played = info["policy"]
        raw = _raw_policy(env, played, actions)
        tr = transfer_policy(raw, model, x, method="name", graph=graph)
        # both meet the same budget, each counted by the other's cost arithmetic and by a direct count
        assert policy_costs(played, graph, model)[f"{metric}_ratio"] <= ratio * (1 + 1e-9)
        assert env.cost_of(env.actions_for(tr)) <= env.target_cost * (1 + 1e-9)
        if metric == "macs":
            pruned = apply_policy(model, played, example_input=x)
            assert count_macs_params(pruned, x)[0] <= ratio * count_macs_params(model, x)[0] * (1 + 1e-9)
        # transfer takes the env's clipped policy as it is ...
        again = transfer_policy(played, model, x, method="name", graph=graph)
        assert _channels(again) == _channels(played) and again.search["transfer"]["multiplier"] == 1.0
        # ... and the env plays transfer's scaled policy unclipped: the same actions, the same channels
        tr_actions = env.actions_for(tr)
        info_tr = play_episode(env, tr_actions, seed=0)
        assert info_tr["actions"] == pytest.approx(tr_actions, abs=1e-6)
        assert _channels(info_tr["policy"]) == _channels(tr)
        # a policy already within the budget is left alone by both
        if env.cost_of(actions) <= env.target_cost * (1 + 1e-9):
            within += 1
            assert _channels(played) == _channels(raw) == _channels(tr)
            assert info["actions"] == pytest.approx(actions.tolist(), abs=1e-6)
        else:
            assert _channels(played) != _channels(raw)  # the env clipped
            assert all(a <= b for a, b in zip(_channels(tr), _channels(raw)))  # transfer only lowered
    assert within < 6  # the draws include policies over the budget


def test_env_and_transfer_lower_bits_alike(model_and_spec, digits):
    """HAQ's rule with one floor: the same over-budget bit policy comes back with the same widths from
    the env's episode and from transfer onto the same model."""
    model, spec = model_and_spec
    env = _env(model, spec, digits, mode="quant", target="size=0.12")
    x = example_input(spec)
    graph = LayerGraph.build(model, x)
    rng = np.random.default_rng(1)
    lowered = 0
    for _ in range(5):
        actions = rng.uniform(0.3, 1.0, env.n_decisions)
        info = play_episode(env, actions, seed=0)
        played = info["policy"]
        raw = _raw_policy(env, played, actions)
        tr = transfer_policy(raw, model, x, method="name", graph=graph)
        assert _bits(tr) == _bits(played)
        assert tr.achieved["size_ratio"] <= 0.12 * (1 + 1e-9)
        assert policy_costs(played, graph, model)["size_ratio"] == pytest.approx(tr.achieved["size_ratio"])
        lowered += tr.search["transfer"].get("bits_lowered", 0) > 0
        assert all(b is None or b >= 2 for wa in _bits(played) for b in wa)  # the floor: the space's b_min
    assert lowered > 0  # HAQ's walk really ran
