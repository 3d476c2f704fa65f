"""Network slimming (Liu et al., ICCV 2017, arXiv 1708.06519): sparsity training of norm-layer scales.

Training adds ``lambda * sum |gamma|`` over the scale (``weight``) of every affine norm layer
(BatchNorm, GroupNorm, LayerNorm, InstanceNorm) to the loss; its subgradient ``lambda * sign(gamma)``
(0 at 0) pushes the scales of unneeded channels to zero. The paper uses ``lambda = 1e-4`` (VGG,
CIFAR) and ``1e-5`` (ResNet, DenseNet). The channels are then pruned by ``|gamma|``: amc's
``bn_scale`` importance (:mod:`amc.pruning`), with per-group keep ratios from a policy.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["NORM_TYPES", "norm_scales", "scale_values", "slimming_penalty"]

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
    scales = norm_scales(model)
    if not scales:
        return torch.zeros(0)
    return torch.cat([s.detach().abs().float().reshape(-1).cpu() for s in scales])
