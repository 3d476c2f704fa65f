"""Map a learned policy onto another model and re-enforce its budget there.

Two mappings (:func:`transfer_policy`, ``method="auto"`` picks the first that applies):

* **by name** (``"name"``): the target has the same prunable groups (same leader layers) and
  layers, by module name: the same architecture with other weights, or a *wider* sibling whose
  channel counts differ. Keep ratios carry over as ratios (kept channels are recomputed from the
  target's totals), bits and sparsity by layer name.
* **by relative depth within a stage** (``"depth"``): a deeper (or shallower) sibling, e.g. a
  ResNet-20 policy onto a ResNet-56. Groups and layers of both models are split into *stages* and,
  inside a stage, into *roles*; a target unit at relative depth ``d`` in its stage (``i / (n - 1)``)
  takes the source value linearly interpolated at ``d`` in the matching stage (AMC, He et al. 2018,
  Sec. 4.1 observe that policies share a per-stage pattern across depths).

  Stages (``stages="spatial"``, used when both models' geometry is known): convolutions are
  grouped by their output's spatial size, ranked from the largest (``16x16 -> 8x8 -> 4x4`` for a
  CIFAR ResNet on 16x16 inputs, whatever the absolute resolution), and fully connected layers form
  a last stage. A group's stage is its leader's; its role is ``shared`` when several
  non-depthwise layers produce its channels (a residual add couples them) and ``single`` otherwise;
  a layer's role is its kind (conv / depthwise / linear). Without the source model's geometry
  (a policy whose ``model`` is not a buildable spec), ``stages="prefix"`` groups by the first
  component of the module name (``layer2.0.conv1 -> layer2``).

  Two models whose stage/role structure differs (another family, another number of stages) cannot
  be mapped: :class:`AmcError` says which structure each has.

**Budget** (``policy.budget``, or ``budget="macs=0.4"``): the mapped policy's cost is computed on the
target with :class:`amc.cost.CostModel`; when it is over budget the policy is made cheaper until it
holds, by the rules of :mod:`amc.budget` (the env's): for ``size``/``bitops`` budgets with bit widths,
HAQ's rule first (lower activation, then weight bits, last layer to first, the first and last layers
only when the others do not suffice; never below :func:`amc.budget.bit_floors`, i.e. 2 bits unless
the policy already used fewer); then all keep ratios are scaled by one common multiplier ``m`` found
by bisection (``r' = max(m r, min(r, lbound))``: never below ``lbound`` unless the source already
was). Ratios are never raised. The achieved cost is recorded in ``policy.achieved``
and how the transfer went in ``policy.search["transfer"]``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from amc.budget import FLOAT_BITS, bisect, bit_floors, limit, lower_bits, path_candidates, scale_to_budget
from amc.compress import policy_mismatch
from amc.cost import CostModel, kept_channels
from amc.errors import AmcError
from amc.graph import LayerGraph
from amc.models import build_model, resolve_spec
from amc.models import example_input as spec_example
from amc.policy import GroupDecision, LayerDecision, Policy, parse_target

log = logging.getLogger(__name__)

__all__ = ["transfer_policy", "uniform_policy", "policy_matches", "policy_costs", "stage_keys", "METHODS", "STAGINGS"]

METHODS = ("auto", "name", "depth")
STAGINGS = ("auto", "spatial", "prefix")


# --------------------------------------------------------------------------------------------------
# stages


def stage_keys(graph: LayerGraph, *, stages: str = "spatial") -> tuple[list[tuple], list[tuple]]:
    """``(group keys, layer keys)`` of a traced model: one ``(stage, role)`` tuple per prunable group
    and per layer, in execution order (see the module docstring)."""
    if stages == "prefix":
        return _prefix_keys([g.leader for g in graph.groups], graph.layers)
    if stages != "spatial":
        raise AmcError(f"unknown staging {stages!r}; valid: spatial, prefix")
    areas = sorted({ly.out_size[0] * ly.out_size[1] for ly in graph.layers if ly.kind != "linear"}, reverse=True)
    rank = {a: i for i, a in enumerate(areas)}

    def stage(name: str) -> tuple:
        ly = graph.layer(name)
        return ("fc",) if ly.kind == "linear" else ("conv", rank[ly.out_size[0] * ly.out_size[1]])

    # a group's role: "shared" when several non-depthwise layers produce its channels
    gk = [(*stage(g.leader), "shared" if sum(graph.layer(n).kind != "depthwise" for n in g.out_layers) > 1
           else "single") for g in graph.groups]
    lk = [(*stage(ly.name), "conv" if ly.kind == "grouped" else ly.kind) for ly in graph.layers]
    return gk, lk


def _prefix_keys(leaders: Sequence[str], layers: Sequence[Any]) -> tuple[list[tuple], list[tuple]]:
    """Keys by the first component of the module name: ``layer2.0.conv1 -> layer2``."""
    return ([("stage", n.split(".")[0], "group") for n in leaders],
            [("stage", ly.name.split(".")[0], ly.kind) for ly in layers])


def _n_stages(keys: Sequence[tuple]) -> int:
    return len({k[:-1] for k in keys})


def _describe(keys: Sequence[tuple]) -> str:
    return ", ".join(f"{'/'.join(map(str, k))} x{n}" for k, n in Counter(keys).items())


def _check_same_structure(src: tuple[list, list], tgt: tuple[list, list], *, groups: bool,
                          layers: bool) -> None:
    """``src``, ``tgt``: the ``(group keys, layer keys)`` of :func:`stage_keys`."""
    for on, what, sk, tk in ((groups, "prunable groups", src[0], tgt[0]), (layers, "layers", src[1], tgt[1])):
        if not on:
            continue
        if _n_stages(sk) != _n_stages(tk):
            raise AmcError(
                f"cannot transfer the policy: its model has {_n_stages(sk)} stage(s) of {what} but the target has "
                f"{_n_stages(tk)} (source: {_describe(sk)}; target: {_describe(tk)}); depth transfer needs a "
                "sibling with the same stages (e.g. resnet20 -> resnet56), not another family")
        if set(sk) != set(tk):
            raise AmcError(
                f"cannot transfer the policy: the stage structure of the {what} differs (source: "
                f"{_describe(sk)}; target: {_describe(tk)}); the models are not siblings of one family")


def _interp(values: Sequence[float | None], d: float, *, integer: bool = False) -> float | None:
    """Value at relative depth ``d`` in [0, 1] of ``values`` (evenly spaced over [0, 1])."""
    n = len(values)
    x = d * (n - 1)
    lo = min(int(math.floor(x + 1e-12)), n - 1)
    hi = min(lo + 1, n - 1)
    w = x - lo
    a, b = values[lo], values[hi]
    if a is None or b is None or hi == lo:
        return a if (w < 0.5 or hi == lo) else b
    v = (1.0 - w) * float(a) + w * float(b)
    return int(math.floor(v + 0.5)) if integer else v


def _map_by_depth(src_keys: Sequence[tuple], src_vals: Sequence[Any], tgt_keys: Sequence[tuple], *,
                  integer: bool = False) -> list[Any]:
    by_key: dict[tuple, list[Any]] = {}
    for k, v in zip(src_keys, src_vals):
        by_key.setdefault(k, []).append(v)
    counts = Counter(tgt_keys)
    seen: Counter = Counter()
    out = []
    for k in tgt_keys:
        i, n = seen[k], counts[k]
        seen[k] += 1
        out.append(_interp(by_key[k], i / (n - 1) if n > 1 else 0.5, integer=integer))
    return out


# --------------------------------------------------------------------------------------------------
# matching


def policy_matches(policy: Policy, graph: LayerGraph) -> bool:
    """Whether ``policy`` was made for exactly this model: same group leaders and sizes, same layers."""
    return policy_mismatch(policy, graph) is None


def _names_match(policy: Policy, graph: LayerGraph) -> bool:
    """Same group leaders and the same layer names (channel counts may differ: a wider sibling)."""
    leaders = [g.layers[0] for g in policy.groups]
    if policy.granularity == "channel" and leaders != [g.leader for g in graph.groups]:
        return False
    names = [ly.name for ly in graph.layers]
    return [ly.name for ly in policy.layers] == names or (
        not _has_layer_decisions(policy) and all(ly.name in names for ly in policy.layers))


def _has_layer_decisions(policy: Policy) -> bool:
    return any(ly.w_bits is not None or ly.a_bits is not None or ly.sparsity is not None for ly in policy.layers)


def _source_graph(policy: Policy) -> LayerGraph | None:
    """The graph of the model the policy was found on, built from ``policy.model`` when it is a
    complete spec (``None`` otherwise)."""
    spec = policy.model
    if not {"num_classes", "in_channels", "image_size"} <= set(spec):
        return None
    try:
        with torch.random.fork_rng(devices=[]):
            source_model = build_model(spec)
        source_example = spec_example(spec)
    except (ValueError, TypeError) as e:
        log.warning("cannot build the policy's model %s (%s): staging by module names", spec, e)
        return None
    graph = LayerGraph.build(source_model, source_example)
    if not policy_matches(policy, graph):
        raise AmcError(f"the policy does not match the model it says it was found on ({policy.model.get('name')}); "
                       "fix the policy's 'model' field")
    return graph


# --------------------------------------------------------------------------------------------------
# cost


class _Cost:
    """Costs of (keep fractions, weight densities, bits) on the target, as ratios of the float model."""

    def __init__(self, graph: LayerGraph, model: nn.Module | None, *, round_to: int, fine: bool) -> None:
        self.cm = CostModel(graph, model, round_to=round_to)
        self.fine = fine
        n = len(graph.layers)
        ones, full = np.ones(len(graph.groups)), np.ones(n)
        self.base = {m: self.raw(m, ones, full, np.full(n, 32.0), np.full(n, 32.0))
                     for m in ("macs", "params", "size", "bitops")}

    def raw(self, metric: str, q: np.ndarray, dens: np.ndarray, wb: np.ndarray, ab: np.ndarray) -> float:
        return self.cm.metric(metric, fractions=q, density=dens if self.fine else None, w_bits=wb, a_bits=ab)

    def ratio(self, metric: str, q: np.ndarray, dens: np.ndarray, wb: np.ndarray, ab: np.ndarray) -> float:
        return self.raw(metric, q, dens, wb, ab) / self.base[metric]

    def ratios(self, q: np.ndarray, dens: np.ndarray, wb: np.ndarray, ab: np.ndarray) -> dict[str, float]:
        return {f"{m}_ratio": self.ratio(m, q, dens, wb, ab) for m in ("macs", "params", "size", "bitops")}


def policy_costs(policy: Policy, graph: LayerGraph, model: nn.Module | None = None) -> dict[str, float]:
    """``macs_ratio``, ``params_ratio``, ``size_ratio``, ``bitops_ratio`` of ``policy`` on the model of
    ``graph`` (fractions of the float32 model; ``model`` adds its norm-layer parameters to params),
    from the kept channels, the per-layer sparsity and bit widths. ``policy`` must match ``graph``."""
    if not policy_matches(policy, graph):
        raise AmcError("policy_costs: the policy does not match this model (transfer it first)")
    channel = policy.granularity == "channel"
    fracs, w, a, s = _map_by_name(policy, graph, channel and bool(policy.groups), False)
    return _Cost(graph, model, round_to=1, fine=not channel).ratios(np.array(fracs), *_arrays(w, a, s))


def _arrays(w: Sequence[Any], a: Sequence[Any], s: Sequence[Any]) -> tuple[np.ndarray, ...]:
    """Per-layer ``(densities, weight bits, activation bits)`` of mapped decisions (``None``: dense/float)."""
    return (np.array([1.0 - (x or 0.0) for x in s]),
            *(np.array([FLOAT_BITS if b is None else float(b) for b in bits]) for bits in (w, a)))


# --------------------------------------------------------------------------------------------------
# the transfer


def transfer_policy(
    policy: Policy,
    target_model: nn.Module,
    example_input: torch.Tensor,
    *,
    target_spec: Mapping[str, Any] | Any | None = None,
    method: str = "auto",
    stages: str = "auto",
    budget: str | None = None,
    graph: LayerGraph | None = None,
) -> Policy:
    """A policy for ``target_model`` mapped from ``policy`` (found on another model), with the budget
    re-enforced on the target (see the module docstring).

    Args:
        policy: the source policy.
        target_model: the model to compress (not modified).
        example_input: an input batch for ``target_model`` (only its shape matters).
        target_spec: the target's :class:`amc.models.ModelSpec` (or dict), recorded as ``model``.
        method: ``auto`` (by name when the group leaders and layer names match, else by depth),
            ``name`` or ``depth``.
        stages: ``auto`` (spatial when the source geometry is known, else prefix), ``spatial`` or
            ``prefix`` (how depth transfer splits models into stages).
        budget: ``METRIC=RATIO`` overriding ``policy.budget`` (needed for a latency budget, which
            cannot be re-enforced without the target's latency table).
        graph: the target's :class:`LayerGraph` when already built (e.g. ``Pruner.graph``).

    Raises:
        AmcError: the models cannot be mapped (another family, different stages, missing layers) or
            the budget cannot be met on the target even at the lower bound.
    """
    if method not in METHODS:
        raise AmcError(f"unknown transfer method {method!r}; valid: {', '.join(METHODS)}")
    if stages not in STAGINGS:
        raise AmcError(f"unknown staging {stages!r}; valid: {', '.join(STAGINGS)}")
    tgraph = graph if graph is not None else LayerGraph.build(target_model, example_input)
    channel = policy.granularity == "channel"
    has_groups = channel and bool(policy.groups)
    has_layer = _has_layer_decisions(policy)

    used = method if method != "auto" else "name" if _names_match(policy, tgraph) else "depth"
    staging = None
    if used == "name":
        fracs, w, a, s = _map_by_name(policy, tgraph, has_groups, has_layer)
    else:
        src_graph = _source_graph(policy) if stages in ("auto", "spatial") else None
        if stages == "spatial" and src_graph is None:
            raise AmcError("spatial staging needs the source model's geometry: a policy whose 'model' is a "
                           "complete spec (name, num_classes, in_channels, image_size)")
        staging = "spatial" if src_graph is not None else "prefix"
        if staging == "prefix":
            log.warning("the policy's model %s is not a buildable spec: stages are taken from module-name prefixes",
                        policy.model)
            src = _prefix_keys([g.layers[0] for g in policy.groups], policy.layers)
        else:
            src = stage_keys(src_graph, stages="spatial")
        tgt = stage_keys(tgraph, stages=staging)
        _check_same_structure(src, tgt, groups=has_groups, layers=has_layer)
        fracs = (_map_by_depth(src[0], [g.channels / g.total for g in policy.groups], tgt[0]) if has_groups
                 else [1.0] * len(tgraph.groups))
        w = a = s = [None] * len(tgraph.layers)
        if has_layer:
            w, a, s = (_map_by_depth(src[1], [getattr(ly, key) for ly in policy.layers], tgt[1],
                                     integer=key != "sparsity") for key in ("w_bits", "a_bits", "sparsity"))

    # ---- budget
    round_to = int(policy.pruning.get("round_to", 1) or 1)
    lbound = float(policy.pruning.get("lbound", 0.2) or 0.2)
    cost = _Cost(tgraph, target_model, round_to=round_to, fine=not channel)
    totals = np.array([g.channels for g in tgraph.groups], dtype=np.int64)
    r = np.clip(np.asarray(fracs, dtype=np.float64), 1e-9, 1.0)
    dens, wb, ab = _arrays(w, a, s)

    def q_of(ratios: np.ndarray) -> np.ndarray:
        return np.array([kept_channels(float(x), int(t), s) / t for x, t, s in zip(ratios, totals, cost.cm.steps)])

    metric, target = _budget(policy, budget)
    before = cost.ratios(q_of(r), dens, wb, ab)
    record: dict[str, Any] = {"source_model": dict(policy.model), "method": used, "stages": staging,
                              "source_accuracy": dict(policy.accuracy), "cost_before": before}
    if metric is not None:
        r, dens, wb, ab, steps = _enforce(cost, metric, target, r, dens, wb, ab, q_of, lbound=lbound,
                                          channel=channel, prune=policy.mode != "quant")
        record.update(steps)
    q = q_of(r)
    achieved = cost.ratios(q, dens, wb, ab)
    if metric is not None and achieved[f"{metric}_ratio"] > target * (1 + 1e-6):
        raise AmcError(f"internal: the transferred policy misses the budget {metric}={target}")

    kept = [int(round(frac * g.channels)) for g, frac in zip(tgraph.groups, q)] if channel else []
    groups = [GroupDecision(g.layers, ch / g.channels, ch, g.channels) for g, ch in zip(tgraph.groups, kept)]
    layers = [LayerDecision(name=ly.name, kind=ly.kind,
                            w_bits=None if wb[i] >= FLOAT_BITS else int(wb[i]),
                            a_bits=None if ab[i] >= FLOAT_BITS else int(ab[i]),
                            sparsity=None if s[i] is None else float(1.0 - dens[i]))
              for i, ly in enumerate(tgraph.layers)]
    model_doc = _model_doc(target_model, target_spec)
    new_budget = (dict(policy.budget) if budget is None
                  else {"metric": metric, "ratio": target, "target": f"{metric}={target:g}"})
    record["achieved"] = achieved
    out = Policy(model=model_doc, mode=policy.mode, granularity=policy.granularity, budget=new_budget,
                 pruning=dict(policy.pruning), scoring=replace(policy.scoring), groups=groups, layers=layers,
                 achieved=achieved, accuracy={}, search={**policy.search, "transfer": record})
    log.info("transferred a %s policy onto %s by %s%s: %s", policy.model.get("name"), model_doc.get("name"), used,
             f" ({staging} stages)" if staging else "",
             ", ".join(f"{k} {v:.3f}" for k, v in achieved.items()))
    return out


def uniform_policy(model: nn.Module, example_input: torch.Tensor, budget: str, *,
                   model_spec: Mapping[str, Any] | Any | None = None, lbound: float = 0.2, round_to: int = 1,
                   importance: str = "l1", graph: LayerGraph | None = None, grid: int = 4096) -> Policy:
    """The uniform baseline without data: every group keeps the same ratio, the largest that meets
    ``budget`` (``macs=R`` or ``params=R``), never below ``lbound``.

    It is the ``uniform`` agent's policy (:mod:`agents.uniform`), found on the cost model instead of
    through the env: the keep ratio ``lbound + s (1 - lbound)`` of the largest scale ``s`` on the
    same ``grid`` whose policy meets the budget (:func:`amc.budget.path_candidates`, bisected). The
    result goes through :func:`transfer_policy`, which re-checks the budget and records the achieved
    cost, so a uniform policy and a transferred one are held to the same budget arithmetic.
    """
    metric, target = parse_target(budget)
    if metric not in ("macs", "params"):
        raise AmcError(f"a uniform pruning policy meets macs= or params= budgets, not {metric}=")
    graph = graph if graph is not None else LayerGraph.build(model, example_input)
    cost = _Cost(graph, model, round_to=round_to, fine=False)
    dense, floats = np.ones(len(graph.layers)), np.full(len(graph.layers), float(FLOAT_BITS))

    def channels(s: float) -> tuple[int, ...]:
        return tuple(kept_channels(lbound + s * (1.0 - lbound), int(t), st) for t, st in zip(cost.cm.totals, cost.cm.steps))

    def fits(s: float) -> bool:
        q = np.array(channels(s)) / np.asarray(cost.cm.totals, dtype=np.float64)
        return cost.ratio(metric, q, dense, floats, floats) <= limit(target)

    cands = path_candidates(channels, grid=grid)
    # cands[0] (every group at lbound) is taken as feasible; if it is not, transfer_policy says so
    scale = cands[bisect(lambda i: fits(cands[i]), 0, len(cands))[0]]
    kept = channels(scale)
    groups = [GroupDecision(g.layers, k / g.channels, k, g.channels) for g, k in zip(graph.groups, kept)]
    layers = [LayerDecision(ly.name, ly.kind) for ly in graph.layers]
    found = Policy(model=_model_doc(model, model_spec), groups=groups, layers=layers,
                   pruning={"importance": importance, "round_to": round_to, "lbound": lbound},
                   search={"agent": "uniform"})
    out = transfer_policy(found, model, example_input, target_spec=model_spec, method="name", budget=budget,
                          graph=graph)
    out.search = {"agent": "uniform", "keep_ratio": lbound + scale * (1.0 - lbound), "achieved": out.achieved}
    return out


def _map_by_name(policy: Policy, graph: LayerGraph, has_groups: bool, has_layer: bool
                 ) -> tuple[list[float], list[int | None], list[int | None], list[float | None]]:
    fracs = [1.0] * len(graph.groups)
    if has_groups:
        by_leader = {g.layers[0]: g.channels / g.total for g in policy.groups}
        missing = [g.leader for g in graph.groups if g.leader not in by_leader]
        extra = sorted(set(by_leader) - {g.leader for g in graph.groups})
        if missing or extra:
            raise AmcError(f"cannot transfer the policy by name: the target's prunable groups led by {missing[:5]} "
                           f"are not in the policy, and the policy's {extra[:5]} are not in the target; "
                           "use method='depth' for a deeper/shallower sibling")
        fracs = [by_leader[g.leader] for g in graph.groups]
    by_name = {ly.name: ly for ly in policy.layers}
    if has_layer:
        missing = [ly.name for ly in graph.layers if ly.name not in by_name]
        if missing:
            raise AmcError(f"cannot transfer the policy by name: the target's layers {missing[:5]} are not in the "
                           "policy; use method='depth' for a sibling model")
    w, a, s = ([getattr(by_name[ly.name], key) if ly.name in by_name else None for ly in graph.layers]
               for key in ("w_bits", "a_bits", "sparsity"))
    return fracs, w, a, s


def _budget(policy: Policy, budget: str | None) -> tuple[str | None, float]:
    if budget is not None:
        metric, ratio = parse_target(budget)
    elif policy.budget.get("metric") is not None and policy.budget.get("ratio") is not None:
        metric, ratio = str(policy.budget["metric"]), float(policy.budget["ratio"])
    else:
        return None, 1.0
    if metric == "latency":
        raise AmcError("a latency budget cannot be re-enforced on another model without its latency table; pass a "
                       "proxy budget instead (e.g. budget='macs=0.5', `amc apply --budget macs=0.5`)")
    return metric, ratio


def _enforce(cost: _Cost, metric: str, target: float, r: np.ndarray, dens: np.ndarray, wb: np.ndarray,
             ab: np.ndarray, q_of: Any, *, lbound: float, channel: bool, prune: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Make the mapped policy meet ``metric <= target`` (ratio of the float model) with the rules of
    :mod:`amc.budget`; see the module doc. ``prune=False`` (a quantization-only policy): only bits may
    change."""
    steps: dict[str, Any] = {"budget": f"{metric}={target:g}", "bits_lowered": 0, "multiplier": 1.0}

    def over(r_: np.ndarray, d_: np.ndarray, w_: np.ndarray, a_: np.ndarray) -> bool:
        return cost.ratio(metric, q_of(r_), d_, w_, a_) > limit(target)

    if not over(r, dens, wb, ab):
        return r, dens, wb, ab, steps
    wb, ab = wb.copy(), ab.copy()
    if metric in ("size", "bitops") and ((wb < FLOAT_BITS).any() or (ab < FLOAT_BITS).any()):
        # HAQ: the first and last layers keep their bits (HAQ's 8-bit convention) unless nothing else helps
        floors = bit_floors(wb, ab)
        n = len(wb)
        everything = [i for i in range(n - 1, -1, -1) if wb[i] < FLOAT_BITS or ab[i] < FLOAT_BITS]
        for order in ([i for i in everything if 0 < i < n - 1], everything):
            steps["bits_lowered"] += lower_bits(order, wb, ab, floors=floors, over=lambda: over(r, dens, wb, ab))
    if not over(r, dens, wb, ab):
        return r, dens, wb, ab, steps
    if not prune:
        raise AmcError(f"the budget {metric}={target:g} cannot be met on the target model by lowering bits alone "
                       "(this quantization policy does not prune); raise the budget (--budget)")
    if channel:
        scaled = scale_to_budget(r, lbound=lbound, fits=lambda x: not over(x, dens, wb, ab))
        if scaled is None:
            lowest = np.minimum(r, lbound)
            raise AmcError(f"the budget {metric}={target:g} cannot be met on the target model even with every "
                           f"group at the lower bound ({lbound}); "
                           f"it reaches {cost.ratio(metric, q_of(lowest), dens, wb, ab):.3f}: "
                           "raise the budget (--budget) or lower the policy's lbound")
        steps["multiplier"], r = scaled
        return r, dens, wb, ab, steps
    thinned = scale_to_budget(dens, lbound=lbound, fits=lambda x: not over(r, x, wb, ab))
    if thinned is None:
        raise AmcError(f"the budget {metric}={target:g} cannot be met on the target model even with every layer at "
                       f"the lower density bound ({lbound}); raise the budget")
    steps["multiplier"], dens = thinned
    return r, dens, wb, ab, steps


def _model_doc(model: nn.Module, spec: Any) -> dict[str, Any]:
    if spec is None:
        return {"name": type(model).__name__}
    try:
        return resolve_spec(spec).to_dict()
    except (ValueError, TypeError):
        return dict(spec) if isinstance(spec, Mapping) else {"name": str(spec)}
