"""Structured channel pruning that really removes channels, with AMC's least-squares reconstruction.

:class:`Pruner` traces a model once (layer graph, Torch-Pruning dependency groups, channel importance)
and then builds any number of pruned copies cheaply: a search calls :meth:`Pruner.prune` once per
episode. Each call deep-copies the untouched original and slices every coupled tensor with
Torch-Pruning's pruning functions, all removals of one module dimension at once (so concatenations,
whose consumer's inputs belong to several groups, stay consistent).

Channel importance (which channels a group keeps) is computed once per criterion, on the original
weights: ``l1`` (default; group L1 norm, Li et al. 2017), ``l2``, ``fpgm`` (geometric median, He et al.
2019), ``bn_scale`` (network slimming, Liu et al. 2017) and ``random`` (seeded).

Reconstruction (AMC, He et al. 2018, Sec. 3; He et al. 2017 "Channel pruning"): after pruning, each
layer whose input channels were removed gets new weights by least squares from its remaining inputs
to the *original* model's outputs, sampled at a few random spatial positions of calibration images.
A grouped convolution is solved one convolution group at a time (its inputs to its outputs); depthwise
convolutions and convolutions with string padding or a non-zero padding mode are not reconstructed.
Layers are fixed in execution order inside one forward pass of the pruned model (a forward pre-hook
solves, then the layer runs with the new weights), so later layers see corrected inputs. The solve
is ridge-regularised toward the current weights (Cholesky on the normal equations
``(A^T A + lam I) W = A^T B + lam W0``), which keeps under-determined layers sane.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune
import torch_pruning as tp

from amc._registry import Registry
from amc.cost import CostModel, kept_channels
from amc.errors import AmcError
from amc.graph import LayerGraph
from amc.utils import run_hooked

log = logging.getLogger(__name__)

__all__ = ["Pruner", "prune", "IMPORTANCES", "magnitude_prune", "PruneTiming"]

IMPORTANCES: Registry = Registry("importance")
IMPORTANCES.register("l1", lambda seed: tp.importance.GroupMagnitudeImportance(p=1))
IMPORTANCES.register("l2", lambda seed: tp.importance.GroupMagnitudeImportance(p=2))
IMPORTANCES.register("fpgm", lambda seed: tp.importance.FPGMImportance())
IMPORTANCES.register("bn_scale", lambda seed: tp.importance.BNScaleImportance())
IMPORTANCES.register("random", lambda seed: _SeededRandom(seed))


class _SeededRandom:
    """Random channel scores from a seeded generator (Torch-Pruning's RandomImportance is unseeded)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, group: object) -> torch.Tensor:
        return torch.from_numpy(self.rng.random(len(group[0].idxs)))  # type: ignore[index]


@dataclass
class PruneTiming:
    """Seconds spent in the last :meth:`Pruner.prune` call."""

    prune: float = 0.0
    reconstruct: float = 0.0


@dataclass
class _Calibration:
    x: torch.Tensor  # (N, C, H, W) normalised calibration images
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (S, C_out) original outputs - bias
    positions: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (S, 3) (n, h, w) long


class Pruner:
    """Builds pruned copies of one model.

    Args:
        model: the trained model; never modified.
        example_input: one input batch (only its shape matters; batch 1 is used for tracing).
        ignored_layers: module names whose output channels must not be pruned (the classifier never is).
        graph: a prebuilt :class:`LayerGraph` of ``model`` (built when omitted).
        seed: seeds the ``random`` importance and the reconstruction's sampled positions.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, *, ignored_layers: list[str] | None = None,
                 graph: LayerGraph | None = None, seed: int = 0) -> None:
        self.model = model
        self.example_input = example_input[:1]
        self.graph = graph if graph is not None else LayerGraph.build(model, self.example_input,
                                                                      ignored_layers=ignored_layers)
        self.seed = seed
        self._rankings: dict[str, list[np.ndarray]] = {}
        self._calibration: _Calibration | None = None
        self._modules = dict(model.named_modules())
        self.timing = PruneTiming()
        self.last_kept: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- importance
    def ranking(self, importance: str = "l1") -> list[np.ndarray]:
        """Per group, channel indices from most to least important (computed once per criterion)."""
        key = importance.lower()
        if key not in self._rankings:
            scorer = IMPORTANCES.get(key)(self.seed)
            ranks, fallback = [], []
            with torch.no_grad():
                for g in self.graph.groups:
                    try:
                        scores = scorer(g.tp_group)
                    except RuntimeError:
                        if g.unit == 1:
                            raise
                        # Torch-Pruning's FPGM cannot score a grouped conv's inputs: use l1 for this group
                        scores = None
                        fallback.append(g.leader)
                    if scores is None:  # e.g. bn_scale on a group without batch norm
                        scores = tp.importance.GroupMagnitudeImportance(p=1)(g.tp_group)
                    s = scores.detach().cpu().double().numpy()
                    if g.slot_of is not None:  # grouped convs: a slot's score is the sum over its channels
                        s = np.bincount(g.slot_of, weights=s, minlength=g.channels)
                    ranks.append(np.argsort(-s, kind="stable"))
            if fallback:
                log.warning("importance %r fails on grouped-convolution groups; l1 ranks them: %s", key,
                            ", ".join(fallback))
            self._rankings[key] = ranks
        return self._rankings[key]

    # ----------------------------------------------------------------- pruning
    def kept_indices(self, keep: Sequence[float], *, importance: str = "l1", round_to: int = 1) -> list[np.ndarray]:
        """Per group, the sorted indices of the channels kept for these keep ratios."""
        groups = self.graph.groups
        if len(keep) != len(groups):
            raise AmcError(f"{len(keep)} keep ratios given, but the model has {len(groups)} prunable groups "
                           f"({', '.join(g.leader for g in groups[:6])}{', ...' if len(groups) > 6 else ''})")
        ranks = self.ranking(importance)
        out = []
        for g, r, rank in zip(groups, keep, ranks):
            try:
                k = kept_channels(float(r), g.channels, g.slot_round_to(round_to))
            except AmcError:
                raise AmcError(f"group {g.index} ({g.leader}): keep ratio {r} must be in (0, 1]") from None
            out.append(np.sort(rank[:k]))
        return out

    def prune(self, keep: Sequence[float], *, importance: str = "l1", reconstruct: bool = False,
              calibration: torch.Tensor | None = None, round_to: int = 1) -> nn.Module:
        """A new model with each group keeping ``ceil(keep[g] * channels)`` channels (rounded to
        ``round_to``). ``reconstruct=True`` needs ``calibration`` images (or a previous call's)."""
        t0 = time.perf_counter()
        kept = self.kept_indices(keep, importance=importance, round_to=round_to)
        pruned = copy.deepcopy(self.model)
        modules = dict(pruned.named_modules())
        removals: dict[tuple[str, str], tuple[object, list[np.ndarray]]] = {}
        self.last_kept = {}
        for g, keep_idx in zip(self.graph.groups, kept):
            if len(keep_idx) == g.channels:
                continue
            drop = ~np.isin(np.arange(g.channels), keep_idx)
            for it in g.items:
                sel = it.idxs[drop[it.root_idxs]]
                if len(sel):
                    removals.setdefault((it.module, it.dim), (it.handler, []))[1].append(sel)
        for (name, dim), (handler, parts) in removals.items():
            idxs = np.unique(np.concatenate(parts))
            handler(modules[name], idxs.tolist())  # type: ignore[operator]
            if dim == "out" and isinstance(self._modules[name], (nn.Conv2d, nn.Linear)):
                self.last_kept[name] = np.setdiff1d(np.arange(self._modules[name].weight.shape[0]), idxs)
        self.timing = PruneTiming(prune=time.perf_counter() - t0)
        if reconstruct:
            t1 = time.perf_counter()
            if calibration is not None:
                self.set_calibration(calibration)
            if self._calibration is None:
                raise AmcError("reconstruct=True needs calibration images: pass calibration=<tensor of inputs>")
            self._reconstruct(pruned, {name for (name, dim) in removals if dim == "in"})
            self.timing.reconstruct = time.perf_counter() - t1
        return pruned

    # ----------------------------------------------------------------- reconstruction
    def set_calibration(self, x: torch.Tensor, *, points_per_image: int = 10) -> None:
        """Record the original model's outputs of every reconstructible layer on ``x`` at sampled
        positions (AMC: 10 random points per image). Done once; reused by every prune call."""
        if self._calibration is not None and self._calibration.x is x:
            return
        rng = np.random.default_rng(self.seed)
        cal = _Calibration(x=x)
        names = {n for g in self.graph.groups for n in g.in_layers}
        handles = []

        def make_hook(name: str):
            def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                y = output.detach()
                if module.bias is not None:
                    shape = (1, -1) + (1,) * (y.dim() - 2)
                    y = y - module.bias.detach().view(shape)
                if y.dim() == 4:
                    n, _, h, w = y.shape
                    p = min(points_per_image, h * w)
                    flat = np.stack([rng.choice(h * w, p, replace=False) for _ in range(n)])  # (N, p)
                    pos = torch.as_tensor(np.stack([np.repeat(np.arange(n), p), flat.ravel() // w, flat.ravel() % w], 1),
                                          device=y.device)
                    cal.positions[name] = pos
                    cal.targets[name] = y[pos[:, 0], :, pos[:, 1], pos[:, 2]]  # (S, C_out)
                elif y.dim() == 2:
                    cal.targets[name] = y
            return hook

        for name in names:
            m = self._modules[name]  # a conv/linear layer; not depthwise, no string or non-zero padding
            if self.graph.layer(name).kind != "depthwise" and not (
                    isinstance(m, nn.Conv2d) and (isinstance(m.padding, str) or m.padding_mode != "zeros")):
                handles.append(m.register_forward_hook(make_hook(name)))
        run_hooked(self.model, x, handles)
        self._calibration = cal

    def _reconstruct(self, pruned: nn.Module, names: set[str], ridge: float = 1e-3, max_inputs: int = 4608) -> None:
        cal = self._calibration
        assert cal is not None
        modules = dict(pruned.named_modules())
        handles = []

        def make_pre_hook(name: str):
            def pre_hook(module: nn.Module, inputs: tuple) -> None:
                x = inputs[0].detach()
                target = cal.targets[name]
                if name in self.last_kept:
                    target = target[:, torch.as_tensor(self.last_kept[name], device=target.device)]
                if isinstance(module, nn.Conv2d):
                    a = _patches(x, module, cal.positions[name])  # (S, C_in*kh*kw)
                else:
                    if x.dim() != 2:
                        return
                    a = x
                groups = getattr(module, "groups", 1)
                if a.shape[1] // groups > max_inputs:  # a (c x c) solve would cost more than it helps
                    return
                w = module.weight.detach()
                # a's columns are channel-major, so (grouped conv) group j's inputs are one block
                cin, cout = a.shape[1] // groups, w.shape[0] // groups
                for j in range(groups):
                    wj = w[j * cout:(j + 1) * cout]  # (C_out/G, C_in/G, kh, kw)
                    sol = _ridge_lstsq(a[:, j * cin:(j + 1) * cin], target[:, j * cout:(j + 1) * cout],
                                       wj.reshape(cout, -1).t(), ridge)
                    module.weight.data[j * cout:(j + 1) * cout] = sol.t().reshape(wj.shape)
            return pre_hook

        for name in names:
            if name in cal.targets and name in modules:
                handles.append(modules[name].register_forward_pre_hook(make_pre_hook(name)))
        run_hooked(pruned, cal.x, handles)

    def cost_model(self, *, round_to: int = 1) -> CostModel:
        return CostModel(self.graph, self.model, round_to=round_to)


def _patches(x: torch.Tensor, conv: nn.Conv2d, pos: torch.Tensor) -> torch.Tensor:
    """im2col at sampled output positions: (S, C_in*kh*kw) in the weight's flattening order."""
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    ph, pw = conv.padding  # type: ignore[misc]
    xp = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1).contiguous()  # (N, Hp, Wp, C): rows gather fast
    n, h, w = pos[:, 0], pos[:, 1], pos[:, 2]
    cols = [xp[n, h * sh + i * dh, w * sw + j * dw] for i in range(kh) for j in range(kw)]  # (S, C) each
    return torch.stack(cols, dim=2).reshape(len(pos), -1)  # (S, C*kh*kw)


def _ridge_lstsq(a: torch.Tensor, b: torch.Tensor, w0: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_W ||a W - b||^2 + lam ||W - w0||^2, lam = ridge * mean diag(a^T a).

    Solved through the (c x c) normal equations, which the ridge term makes positive definite:
    a Cholesky solve, with ``torch.linalg.lstsq`` as the fallback for a numerically singular system;
    ``c`` = inputs x kernel area, usually far smaller than the number of sampled rows.
    """
    gram = (a.t() @ a).double()  # (c, c): float32 products, float64 solve
    lam = ridge * float(gram.diagonal().mean()) + 1e-12
    gram.diagonal().add_(lam)
    rhs = (a.t() @ b).double() + lam * w0.double()  # (c, C_out)
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, chol).float()
    return torch.linalg.lstsq(gram, rhs).solution.float()


def prune(model: nn.Module, keep: Sequence[float], *, example_input: torch.Tensor, importance: str = "l1",
          reconstruct: bool = False, calibration: torch.Tensor | None = None, round_to: int = 1,
          ignored_layers: list[str] | None = None) -> nn.Module:
    """One-shot :meth:`Pruner.prune` (traces the model; build a :class:`Pruner` to prune many times)."""
    return Pruner(model, example_input, ignored_layers=ignored_layers).prune(
        keep, importance=importance, reconstruct=reconstruct, calibration=calibration, round_to=round_to)


def magnitude_prune(model: nn.Module, sparsity: dict[str, float], *, persistent: bool = False) -> nn.Module:
    """Unstructured magnitude pruning (fine-grained, Han et al. 2015): a copy of ``model`` in which each
    named layer's ``sparsity`` fraction of smallest-|w| weights is zero.

    With ``persistent=True`` the zeros are kept during fine-tuning through
    ``torch.nn.utils.prune.custom_from_mask`` (a ``weight_mask`` buffer).
    """
    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    for name, s in sparsity.items():
        if name not in modules or not hasattr(modules[name], "weight"):
            raise AmcError(f"layer {name!r} not found (or has no weight) in the model")
        if not (0.0 <= s < 1.0):
            raise AmcError(f"layer {name!r}: sparsity {s} must be in [0, 1)")
        w = modules[name].weight
        k = int(round(s * w.numel()))
        if k == 0:
            continue
        thresh = w.detach().abs().flatten().kthvalue(k).values
        mask = (w.detach().abs() > thresh).to(w.dtype)
        if persistent:
            torch_prune.custom_from_mask(modules[name], "weight", mask)
        else:
            with torch.no_grad():
                w.mul_(mask)
    return pruned
