"""Evaluation proxies: what is done to a freshly compressed model before its accuracy is measured.

Without fine-tuning, a pruned CNN's accuracy is close to chance, and a search that climbs it ranks
policies by noise (on the CIFAR-10 ResNet-20 reference at ``macs=0.5``, a Spearman correlation of
0.26 with the accuracy after a 1-epoch fine-tune). A proxy repairs the cheapest part of the damage
so that the score ranks policies as fine-tuning will:

``vanilla``
    nothing: prune, then evaluate.
``bn``
    adaptive BatchNorm (EagleEye, Li et al., ECCV 2020): reset every norm layer's running mean and
    variance and re-estimate them in train mode, without gradients, on a fixed, seeded set of
    unaugmented train images. Only the norm layers' running statistics change, never a weight.
``reconstruct``
    AMC's least-squares reconstruction of each pruned layer's consumer from sampled feature maps
    (He et al., ECCV 2018; :meth:`amc.pruning.Pruner.prune`). Changes the consumers' weights.
``reconstruct+bn``
    both, in that order.
``ft:K``
    ``K`` steps of knowledge-distillation fine-tuning from the uncompressed model on fixed train
    batches (HAQ fine-tunes one short epoch per episode), then ``bn``'s re-estimation when the model
    has norm layers.
``auto``
    ``reconstruct`` when only channels are pruned (mode ``prune``): on the CIFAR-10 ResNet-20
    reference at ``macs=0.5`` it predicted the 1-epoch fine-tuned accuracy of 24 policies best
    (Spearman 0.96, 0.88 within 10 % of the budget; ``bn`` 0.94 / 0.64, ``ft:20`` 0.93 / 0.77,
    ``vanilla`` 0.07) at about the cost of ``bn`` (docs/results.md, "Fidelity of the score"). Channels and bits together
    (mode ``joint``): ``reconstruct``, then ``bn``'s re-estimation when the model has norm layers; on
    LeNet-5 / Fashion-MNIST at ``bitops=0.03`` the joint search with reconstruction reached the
    quant-only search (docs/results.md, "Mixed precision, joint search and int8"). Bits only: ``bn`` for models with norm layers, else
    ``vanilla``. Resolved once per search; policies record the resolved name.

The proxy is part of how a policy's model is built (:func:`amc.compress.apply_policy`), so ``amc
apply`` reproduces the search's score exactly. Which proxy predicts fine-tuned accuracy best is an
empirical question that ``amc fidelity`` answers.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from amc.distillation import kd_loss
from amc.errors import AmcError

__all__ = ["Proxy", "ProxyData", "PROXY_NAMES", "parse_proxy", "resolve_proxy", "has_norm_layers",
           "recalibrate_norm", "kd_steps", "apply_proxy"]

#: the proxies by name (``ft:K`` takes its step count after the colon)
PROXY_NAMES = ("vanilla", "bn", "reconstruct", "reconstruct+bn", "ft:K", "auto")


@dataclass(frozen=True)
class Proxy:
    """A parsed proxy: which repairs run, in the order reconstruct -> fine-tune -> norm statistics."""

    name: str
    reconstruct: bool = False
    bn: bool = False
    ft_steps: int = 0

    @property
    def needs_calibration(self) -> bool:
        """Whether the proxy reads the calibration images (train images, fixed seed)."""
        return self.reconstruct or self.bn or self.ft_steps > 0


def parse_proxy(name: str) -> Proxy:
    """``"bn"`` -> ``Proxy("bn", bn=True)``; an unknown name raises :class:`AmcError` listing the valid ones."""
    key = str(name).strip().lower()
    fixed = {
        "vanilla": Proxy("vanilla"),
        "bn": Proxy("bn", bn=True),
        "reconstruct": Proxy("reconstruct", reconstruct=True),
        "reconstruct+bn": Proxy("reconstruct+bn", reconstruct=True, bn=True),
        "auto": Proxy("auto"),
    }
    if key in fixed:
        return fixed[key]
    m = re.fullmatch(r"ft:(\d+)", key)
    if m and int(m.group(1)) >= 1:
        return Proxy(f"ft:{int(m.group(1))}", bn=True, ft_steps=int(m.group(1)))
    raise AmcError(f"unknown proxy {name!r}; valid: {', '.join(PROXY_NAMES)} (e.g. ft:20)")


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def has_norm_layers(model: nn.Module) -> bool:
    """Whether ``model`` has a norm layer with running statistics (BatchNorm and friends)."""
    return bool(_norm_layers(model))


def resolve_proxy(name: str, model: nn.Module, *, prunes_channels: bool = True, quantizes: bool = False) -> Proxy:
    """The concrete proxy for ``name`` on ``model``. ``auto``: ``reconstruct`` when ``prunes_channels``
    (``reconstruct+bn`` when bits are chosen too and the model has norm layers: quantization shifts
    the activation statistics that the reconstruction leaves alone); otherwise ``bn`` with norm
    layers, else ``vanilla``."""
    p = parse_proxy(name)
    if p.name != "auto":
        return p
    norm = has_norm_layers(model)
    if prunes_channels:
        return parse_proxy("reconstruct+bn" if quantizes and norm else "reconstruct")
    return parse_proxy("bn" if norm else "vanilla")


@dataclass
class ProxyData:
    """The fixed inputs of the proxies, built once per search and reused by every episode.

    Attributes:
        images: normalised, unaugmented train images (never val): the norm-statistics set and the
            reconstruction's feature-map samples.
        batch_size: forward batch of the norm-statistics pass.
        teacher: the uncompressed model (``ft:K``).
        ft_batches: ``(x, y)`` train batches of ``ft:K``, drawn once with a fixed seed.
        ft_lr: SGD learning rate of ``ft:K`` (momentum 0.9, no weight decay).
        kd_temperature, kd_alpha: Hinton KD of ``ft:K``.

    The proxies run in float32 whatever precision the evaluation uses, so that ``amc apply``
    rebuilds the very same model.
    """

    images: torch.Tensor | None = None
    batch_size: int = 256
    teacher: nn.Module | None = None
    ft_batches: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    ft_lr: float = 0.01
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    seconds: float = 0.0  # duration of the last apply_proxy call
    _teacher_logits: list[torch.Tensor] | None = field(default=None, repr=False)

    def teacher_logits(self) -> list[torch.Tensor]:
        """The teacher's logits on ``ft_batches``, computed once (the teacher never changes)."""
        if self._teacher_logits is None:
            if self.teacher is None:
                raise AmcError("proxy ft:K needs the uncompressed model as teacher")
            was_training = self.teacher.training
            self.teacher.eval()
            with torch.no_grad():
                self._teacher_logits = [self.teacher(x).float() for x, _ in self.ft_batches]
            self.teacher.train(was_training)
        return self._teacher_logits


def make_proxy_data(splits: Any, proxy: Proxy, *, calibration_size: int, seed: int, device: torch.device | str,
                    teacher: nn.Module | None = None, ft_batch_size: int = 64, ft_lr: float = 0.01
                    ) -> ProxyData | None:
    """The proxy's inputs drawn from ``splits``' train split with ``seed`` (``None`` when it needs none).

    The calibration images are the same for every search seed: two searches score one policy alike.
    """
    if not proxy.needs_calibration:
        return None
    images = splits.calibration_batches(1, calibration_size, seed, device=device)[0][0]
    data = ProxyData(images=images, teacher=teacher, ft_lr=ft_lr)
    if proxy.ft_steps:
        pool = min(proxy.ft_steps, 64)  # a fixed pool of batches, cycled when K is larger
        data.ft_batches = splits.calibration_batches(pool, ft_batch_size, seed + 1, device=device)
    return data


@torch.no_grad()
def recalibrate_norm(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on ``images``, in place.

    The statistics are reset and then averaged over the batches, each weighted by its size (so the
    running mean is exactly the mean over ``images``; the variance averages the batches' variances),
    not the training momentum, so the result does not depend on earlier calls. Only the norm
    layers run in train mode; everything else stays in eval mode (activation observers of quantized
    layers included). Weights and biases do not change.
    """
    norms = _norm_layers(model)
    if not norms:
        return model
    was_training = model.training
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.train()
    device = next((p.device for p in model.parameters()), images.device)
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            for m in norms:  # running = running (1 - w) + w batch, w = this batch's share so far
                m.momentum = len(x) / (start + len(x))
            model(x.to(device))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return model


def kd_steps(model: nn.Module, data: ProxyData, steps: int) -> nn.Module:
    """``steps`` SGD steps of Hinton KD (T, alpha of ``data``) on ``data.ft_batches``, in place.

    The batches and the teacher's logits are fixed, so the result depends only on the model.
    """
    if steps < 1:
        return model
    if not data.ft_batches:
        raise AmcError("proxy ft:K needs fine-tuning batches (ProxyData.ft_batches)")
    logits = data.teacher_logits()
    params = [p for p in model.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=data.ft_lr, momentum=0.9)
    was_training = model.training
    model.train()
    device = next((p.device for p in params), torch.device("cpu"))
    try:
        with torch.enable_grad():
            for step in range(steps):
                i = step % len(data.ft_batches)
                x, y = data.ft_batches[i]
                out = model(x.to(device))
                loss = kd_loss(out.float(), logits[i].to(device), y.to(device), temperature=data.kd_temperature,
                               alpha=data.kd_alpha)
                if not math.isfinite(float(loss.detach())):
                    break  # a diverging step would only spoil the score; stop where it was finite
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    return model


def apply_proxy(model: nn.Module, proxy: Proxy, data: ProxyData | None) -> nn.Module:
    """Run ``proxy``'s fine-tuning and norm re-estimation on ``model`` in place (its reconstruction
    happens while pruning). ``data`` must come from :func:`make_proxy_data` for the same proxy."""
    if not (proxy.bn or proxy.ft_steps):
        return model
    if data is None or data.images is None:
        raise AmcError(f"proxy {proxy.name} needs calibration images from the train split: pass the dataset "
                       "(amc apply takes them from it, seeded as the search did)")
    t0 = time.perf_counter()
    kd_steps(model, data, proxy.ft_steps)  # (none for ft_steps = 0)
    if proxy.bn:
        recalibrate_norm(model, data.images, batch_size=data.batch_size)
    model.eval()
    data.seconds = time.perf_counter() - t0
    return model
