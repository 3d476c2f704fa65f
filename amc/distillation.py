"""Knowledge distillation losses (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015, arXiv 1503.02531).

The loss used by fine-tuning, with ``alpha`` the weight of the distillation term::

    L = alpha * T^2 * KL( softmax(t / T) || softmax(s / T) )  +  (1 - alpha) * CE(s, y)

where ``s``/``t`` are the student/teacher logits, ``T`` the temperature and ``y`` the labels. The KL
term is averaged over the batch (``batchmean``: a true per-sample KL divergence) and multiplied by
``T^2`` so that its gradient keeps the same magnitude as ``T`` changes (Hinton et al., section 2).
``alpha = 1`` is pure distillation (no labels needed), ``alpha = 0`` plain cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amc.errors import AmcError

__all__ = ["kd_loss", "DistillationLoss"]


def _check(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise AmcError(f"distillation temperature must be > 0 (Hinton et al. use 1..20), got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise AmcError(f"distillation alpha (the weight of the KD term) must be in [0, 1], got {alpha}")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton KD loss ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(s, y)`` (batch mean).

    The logits are ``(N, K)`` raw outputs (gradients flow through the student's only); ``targets``
    are ``(N,)`` int64 labels, ``None`` only when ``alpha == 1``; ``label_smoothing`` goes to the
    cross-entropy term.
    """
    _check(temperature, alpha)
    if student_logits.shape != teacher_logits.shape:
        raise AmcError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                       f"{tuple(teacher_logits.shape)} differ: distillation needs the same classes")
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=1)  # (N, K)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)  # (N, K)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    loss = alpha * (t * t) * kl
    if alpha < 1.0:
        if targets is None:
            raise AmcError("kd_loss needs targets unless alpha == 1 (pure distillation)")
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    return loss


class DistillationLoss(nn.Module):
    """:func:`kd_loss` as a module with fixed ``temperature`` and ``alpha`` (checked on creation)."""

    def __init__(self, *, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check(temperature, alpha)
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        return kd_loss(student_logits, teacher_logits, targets, temperature=self.temperature, alpha=self.alpha,
                       label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
