"""Zoo check: does amc prune a model family end to end, with costs that match an independent count?

For one torchvision classification model (random weights, a small input) :func:`check_model` runs
what a search needs and checks what it relies on:

1. the layer graph (layers, prunable groups = decisions);
2. the cost model on the unpruned model against ``torch.utils.flop_counter.FlopCounterMode``
   (which reports 2 FLOPs per multiply-accumulate) and the parameter count;
3. a random feasible policy at the MACs target (``macs=0.5``), or at the lowest MACs ratio reachable
   with every keep ratio at ``lbound`` when the target is below it;
4. a real prune with :class:`amc.pruning.Pruner`, a forward pass (shape, finite values);
5. the predicted MACs and parameters of that policy against the independent count on the pruned model.

:data:`FAMILIES` lists one (smallest) member per torchvision family with an input size it accepts.
The checks are library code so that the tests and ``scripts/zoo_table.py`` share them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from amc.budget import bisect, limit
from amc.cost import CostModel, kept_channels
from amc.errors import AmcError
from amc.models import ModelSpec, build_model, example_input
from amc.pruning import Pruner
from amc.utils import eval_mode

log = logging.getLogger(__name__)

__all__ = ["FAMILIES", "ZooEntry", "ZooResult", "check_model", "lowest_macs_ratio", "random_feasible_policy",
           "independent_count"]


@dataclass(frozen=True)
class ZooEntry:
    """One model of the sweep: torchvision name, family, input side in pixels and build kwargs."""

    name: str
    family: str
    size: int = 32
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: why the family is not supported (transformers whose attention runs outside nn.Linear modules)
    unsupported: str | None = None
    #: run the check anyway (its outcome is shown next to the reason)
    attempt: bool = True


_ATTENTION = ("attention runs as functional ops on module weights ({}): amc's layer graph and cost "
              "model do not see those MACs and the heads are never pruned")

#: one (smallest) member per torchvision classification family, at a small input it accepts
FAMILIES: list[ZooEntry] = [
    ZooEntry("alexnet", "alexnet", 64),
    ZooEntry("vgg11_bn", "vgg"),
    ZooEntry("resnet18", "resnet"),
    ZooEntry("wide_resnet50_2", "wide_resnet"),
    ZooEntry("resnext50_32x4d", "resnext"),
    ZooEntry("regnet_x_400mf", "regnet_x"),
    ZooEntry("regnet_y_400mf", "regnet_y"),
    ZooEntry("mobilenet_v2", "mobilenet_v2"),
    ZooEntry("mobilenet_v3_small", "mobilenet_v3"),
    ZooEntry("efficientnet_b0", "efficientnet"),
    ZooEntry("efficientnet_v2_s", "efficientnet_v2"),
    ZooEntry("mnasnet0_5", "mnasnet"),
    ZooEntry("shufflenet_v2_x0_5", "shufflenet_v2"),
    ZooEntry("shufflenet_v2_x1_0", "shufflenet_v2"),
    ZooEntry("squeezenet1_1", "squeezenet", 64),
    ZooEntry("densenet121", "densenet"),
    ZooEntry("googlenet", "googlenet", 64, {"aux_logits": False, "init_weights": True}),
    ZooEntry("inception_v3", "inception_v3", 75, {"aux_logits": False, "init_weights": True}),
    ZooEntry("convnext_tiny", "convnext"),
    ZooEntry("vit_b_16", "vit", 32,
             unsupported=_ATTENTION.format("nn.MultiheadAttention's in_proj_weight, QK^T, AV; FlopCounterMode "
                                           "misses its eval fast path too, so the counts agree without them")),
    ZooEntry("swin_t", "swin", 32, attempt=False,
             unsupported=_ATTENTION.format("ShiftedWindowAttention's qkv/proj weights, QK^T, AV") + "; "
             "Torch-Pruning 1.6.1's own get_all_groups on swin_t stalls after the first group (no result in minutes)"),
]


@dataclass
class ZooResult:
    """Outcome of :func:`check_model` (ratios are of the unpruned model's MACs)."""

    name: str
    family: str
    size: int
    layers: int = 0
    decisions: int = 0
    lowest_ratio: float = math.nan  # every decision at lbound
    target_ratio: float = math.nan  # the MACs ratio the random policy aims at
    macs_ratio: float = math.nan  # the pruned model's MACs ratio (independent count)
    status: str = "not run"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def independent_count(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(MACs per sample, parameters) counted by PyTorch's ``FlopCounterMode`` (FLOPs / 2), not amc."""
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def lowest_macs_ratio(cost: CostModel, *, lbound: float = 0.2) -> float:
    """MACs ratio with every group at ``lbound`` (the most a search can prune)."""
    q = np.array([kept_channels(lbound, int(t), s) / t for t, s in zip(cost.totals, cost.steps)])
    return cost.macs(fractions=q) / cost.base_macs


def random_feasible_policy(cost: CostModel, target: float, *, lbound: float = 0.2,
                           rng: np.random.Generator) -> np.ndarray:
    """Random keep ratios in ``[lbound, 1]`` whose MACs ratio is at most ``max(target, lowest)``.

    Draws ``u ~ U(0, 1)`` per group and takes ``keep = lbound + (1 - lbound) * u * (1 - s)`` with the
    smallest ``s`` in [0, 1] that meets the budget (MACs fall monotonically in ``s``; bisection).
    """
    u = rng.uniform(0.0, 1.0, len(cost.totals))
    goal = limit(max(target, lowest_macs_ratio(cost, lbound=lbound)) * cost.base_macs)

    def keep(s: float) -> np.ndarray:
        return np.clip(lbound + (1.0 - lbound) * u * (1.0 - s), lbound, 1.0)

    if cost.macs(keep(0.0)) <= goal:
        return keep(0.0)
    return keep(bisect(lambda s: cost.macs(keep(s)) > goal, 0.0, 1.0, steps=40)[1])  # the smallest s that fits


def check_model(entry: ZooEntry, *, target: float = 0.5, lbound: float = 0.2, seed: int = 0,
                rel_tol: float = 1e-6) -> ZooResult:
    """Run the zoo check on one model; never raises for a model that fails (the status says why)."""
    t0 = time.perf_counter()
    res = ZooResult(entry.name, entry.family, entry.size)
    if entry.attempt:
        try:
            res.status = _check(entry, res, target=target, lbound=lbound, seed=seed, rel_tol=rel_tol)
        except Exception as e:  # a failing model is a result of the sweep, not an error of it
            res.status = f"error: {type(e).__name__}: {e}".splitlines()[0][:200]
    if entry.unsupported:
        res.status = f"not supported: {entry.unsupported}" + (f" (check: {res.status})" if entry.attempt else "")
    res.seconds = time.perf_counter() - t0
    log.info("zoo %s: %s (%.1fs)", entry.name, res.status, res.seconds)
    return res


def _check(entry: ZooEntry, res: ZooResult, *, target: float, lbound: float, seed: int, rel_tol: float) -> str:
    close = partial(math.isclose, rel_tol=rel_tol, abs_tol=rel_tol)  # relative, or absolute below 1
    torch.manual_seed(seed)
    spec = ModelSpec(f"torchvision:{entry.name}", num_classes=10, in_channels=3,
                     image_size=(entry.size, entry.size), kwargs=dict(entry.kwargs))
    model = build_model(spec).eval()
    x = example_input(spec)
    pruner = Pruner(model, x, seed=seed)
    graph = pruner.graph
    res.layers, res.decisions = len(graph.layers), len(graph.groups)
    if not graph.groups:
        return "no prunable group"
    cost = pruner.cost_model()
    macs0, params0 = independent_count(model, x)
    if not close(cost.base_macs, macs0) or not close(cost.base_params, params0):
        return (f"unpruned count mismatch: amc {cost.base_macs:.0f} MACs / {cost.base_params:.0f} params, "
                f"FlopCounterMode {macs0} MACs / {params0} params")
    res.lowest_ratio = lowest_macs_ratio(cost, lbound=lbound)
    res.target_ratio = max(target, res.lowest_ratio)
    keep = random_feasible_policy(cost, target, lbound=lbound, rng=np.random.default_rng(seed))
    predicted_macs, predicted_params = cost.macs(keep), cost.params(keep)
    if predicted_macs > limit(res.target_ratio * cost.base_macs):
        return f"policy misses the budget: {predicted_macs / cost.base_macs:.4f} > {res.target_ratio:.4f}"
    pruned = pruner.prune(keep)
    with torch.no_grad():
        y = pruned.eval()(x)
    if tuple(y.shape) != (1, 10) or not torch.isfinite(y).all():
        return f"pruned forward gives shape {tuple(y.shape)} (finite: {bool(torch.isfinite(y).all())})"
    macs1, params1 = independent_count(pruned, x)
    res.macs_ratio = macs1 / macs0
    if not close(predicted_macs, macs1):
        return f"pruned MACs: predicted {predicted_macs:.0f}, FlopCounterMode {macs1}"
    if not close(predicted_params, params1):
        return f"pruned params: predicted {predicted_params:.0f}, counted {params1}"
    return "ok"


def markdown_table(results: list[ZooResult]) -> str:
    """The README table: model, input, decisions, lowest reachable MACs ratio, pruned ratio, status; the
    reasons of models that are not supported follow the table as notes."""
    rows = ["| model | input | layers | decisions | lowest MACs ratio (lbound 0.2) | random policy MACs ratio | status |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for r in results:
        low = "-" if math.isnan(r.lowest_ratio) else f"{r.lowest_ratio:.3f}"
        got = "-" if math.isnan(r.macs_ratio) else f"{r.macs_ratio:.3f}"
        status = r.status.replace("|", "/")
        if status.startswith("not supported: "):
            notes.append(f"* `{r.name}`: {status[len('not supported: '):]}")
            status = "not supported (note below)"
        rows.append(f"| `{r.name}` | {r.size}x{r.size} | {r.layers} | {r.decisions} | {low} | {got} | {status} |")
    return "\n".join(rows + ([""] + notes if notes else []))


def entry(name: str) -> ZooEntry:
    """The :data:`FAMILIES` entry for a torchvision name."""
    for e in FAMILIES:
        if e.name == name:
            return e
    raise AmcError(f"{name!r} is not in the zoo sweep; valid: {', '.join(e.name for e in FAMILIES)}")
