"""Network slimming (Liu et al., ICCV 2017, arXiv 1708.06519): sparsity training of norm-layer scales.

Training adds ``lambda * sum |gamma|`` over the scale (``weight``) of every affine norm layer
(BatchNorm, GroupNorm, LayerNorm, InstanceNorm) to the loss; its subgradient ``lambda * sign(gamma)``
(0 at 0) pushes the scales of unneeded channels to zero. The paper uses ``lambda = 1e-4`` (VGG,
CIFAR) and ``1e-5`` (ResNet, DenseNet). The channels are then pruned by ``|gamma|``: amc's
``bn_scale`` importance (:mod:`amc.pruning`), with per-group keep ratios from any policy, or from
one global threshold on the scales as the paper does (:func:`threshold_policy`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from amc.budget import last_true
from amc.errors import AmcError
from amc.policy import GroupDecision, LayerDecision, Policy
from amc.pruning import IMPORTANCES, Pruner

__all__ = ["NORM_TYPES", "norm_scales", "scale_values", "slimming_penalty", "threshold_policy"]

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def norm_scales(model: nn.Module) -> list[nn.Parameter]:
    """The scale parameters (``weight``) of ``model``'s affine norm layers, in module order."""
    return [m.weight for m in model.modules()
            if isinstance(m, NORM_TYPES) and isinstance(getattr(m, "weight", None), nn.Parameter)]


def slimming_penalty(model: nn.Module, lam: float) -> torch.Tensor:
    """``lam * sum |gamma|`` over :func:`norm_scales` (a scalar tensor; 0 without norm layers)."""
    scales = norm_scales(model)
    if not scales or lam == 0:
        return torch.zeros((), device=scales[0].device if scales else None)
    return lam * torch.stack([s.abs().sum() for s in scales]).sum()


@torch.no_grad()
def scale_values(model: nn.Module) -> torch.Tensor:
    """All norm scales ``|gamma|`` of ``model`` as one CPU float tensor (for histograms)."""
    scales = [s.detach().abs().float().reshape(-1).cpu() for s in norm_scales(model)]
    return torch.cat(scales) if scales else torch.zeros(0)


def threshold_policy(model: nn.Module, example_input: torch.Tensor, *, macs_ratio: float, min_keep: float = 0.05,
                     model_spec: dict | None = None) -> Policy:
    """Network slimming's pruning step: one global threshold on the channels' ``bn_scale`` scores
    (``|gamma|``, averaged over a coupled group's norm layers), the smallest that brings the MACs to
    ``macs_ratio`` of the model's; each group keeps its channels above it (at least ``min_keep`` of
    them). Groups without a norm layer are kept whole. Returns a channel policy whose
    ``importance`` is ``bn_scale``, so :func:`amc.compress.apply_policy` drops exactly those channels.
    """
    if not (0.0 < macs_ratio <= 1.0):
        raise AmcError(f"macs_ratio {macs_ratio} must be in (0, 1]")
    if not (0.0 < min_keep <= 1.0):
        raise AmcError(f"min_keep {min_keep} must be in (0, 1]")
    pruner = Pruner(model, example_input)
    groups = pruner.graph.groups
    scorer = IMPORTANCES.get("bn_scale")(0)
    scores = []
    with torch.no_grad():
        for g in groups:
            s = scorer(g.tp_group) if g.unit == 1 else None
            scores.append(None if s is None else s.detach().cpu().double().numpy())
    if all(s is None for s in scores):
        raise AmcError("the model has no prunable group with a norm layer: network slimming needs BatchNorm scales")
    cost = pruner.cost_model()
    floor = [max(1, math.ceil(min_keep * g.channels)) for g in groups]

    def kept(t: float) -> list[int]:
        return [g.channels if s is None else max(f, int((s >= t).sum())) for g, s, f in zip(groups, scores, floor)]

    def macs(t: float) -> float:
        return cost.macs([k / g.channels for k, g in zip(kept(t), groups)]) / cost.base_macs

    cands = np.unique(np.concatenate([s for s in scores if s is not None]))
    cands = np.append(cands, cands[-1] + 1.0)  # above every score: the most pruning

    def over(i: int) -> bool:
        return macs(float(cands[i])) > macs_ratio + 1e-9

    if over(len(cands) - 1):
        raise AmcError(f"macs={macs_ratio} is unreachable with min_keep={min_keep}: lower min_keep")
    best = float(cands[1 + last_true(len(cands) - 1, over)])  # the smallest threshold that meets the budget
    spec = dict(model_spec) if model_spec is not None else {"name": type(model).__name__}
    return Policy(model=spec, mode="prune", granularity="channel",
                  budget={"metric": "macs", "ratio": macs_ratio, "target": f"macs={macs_ratio}"},
                  pruning={"importance": "bn_scale", "round_to": 1,
                           "threshold": best},
                  groups=[GroupDecision(layers=g.layers, keep_ratio=k / g.channels, channels=k, total=g.channels)
                          for g, k in zip(groups, kept(best))],
                  layers=[LayerDecision(ly.name, ly.kind, None, None, None) for ly in pruner.graph.layers])
