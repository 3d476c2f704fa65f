"""Build the compressed model a policy describes: the one code path used by the search's reward,
``amc apply`` and ``amc finetune``, so that applying a policy reproduces what the search evaluated.

Order: channel pruning (+ optional LS reconstruction) -> unstructured sparsity -> quantization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.policy import Policy
from amc.pruning import Pruner, magnitude_prune

if TYPE_CHECKING:
    from amc.quantization import QuantCache

__all__ = ["apply_policy", "check_policy_matches"]


def check_policy_matches(policy: Policy, pruner: Pruner) -> None:
    """Raise :class:`AmcError` (naming the first difference) unless the policy's groups and layers are
    the model's, by module name and size."""
    graph = pruner.graph
    if policy.granularity == "channel" and policy.groups:
        if len(policy.groups) != len(graph.groups):
            raise AmcError(f"policy has {len(policy.groups)} prunable groups but the model has {len(graph.groups)}: "
                           "it was found on another architecture (use amc.transfer for a sibling model)")
        for pg, g in zip(policy.groups, graph.groups):
            if pg.layers[0] != g.leader or pg.total != g.channels:
                raise AmcError(f"policy group led by {pg.layers[0]!r} ({pg.total} channels) does not match the "
                               f"model's group led by {g.leader!r} ({g.channels} channels)")
    names = {ly.name for ly in graph.layers}
    missing = [ly.name for ly in policy.layers if ly.name not in names]
    if missing:
        raise AmcError(f"policy names layer(s) {missing[:5]} that the model does not have")


def apply_policy(model: nn.Module, policy: Policy, *, example_input: torch.Tensor | None = None,
                 pruner: Pruner | None = None, calibration: torch.Tensor | None = None,
                 quant_calibration: torch.Tensor | Sequence[torch.Tensor] | None = None,
                 quant_cache: QuantCache | None = None, check: bool = True) -> nn.Module:
    """A new model compressed as ``policy`` says; ``model`` is left untouched.

    Args:
        model: the uncompressed, trained model the policy was found on (or one of the same architecture).
        policy: the policy.
        example_input: an input batch for tracing (needed unless ``pruner`` is given).
        pruner: a :class:`Pruner` of ``model`` to reuse (the search passes its own: no re-tracing).
        calibration: images for the least-squares reconstruction when the policy asks for it.
        quant_calibration: images for activation-range calibration when the policy has activation bits
            (ranges come from the float, possibly pruned, model's statistics on them).
        quant_cache: an :class:`amc.quantization.QuantCache` shared across calls (the search keeps one):
            weight codes, activation statistics and scales seen before are reused. The model is the same
            as without it, only built faster.
    """
    if pruner is None:
        if example_input is None:
            raise AmcError("apply_policy needs example_input (an input batch) or a Pruner")
        pruner = Pruner(model, example_input)
    if check:
        check_policy_matches(policy, pruner)
    opts = policy.pruning
    out = model
    if policy.granularity == "channel" and any(g.channels < g.total for g in policy.groups):
        reconstruct = bool(opts.get("reconstruct", False))
        if reconstruct and calibration is None and pruner._calibration is None:
            raise AmcError("this policy was found with least-squares reconstruction: pass calibration images "
                           "(amc apply takes them from the dataset's train split)")
        out = pruner.prune([g.channels / g.total for g in policy.groups], importance=str(opts.get("importance", "l1")),
                           reconstruct=reconstruct, calibration=calibration, round_to=1)
    sparsity = {ly.name: ly.sparsity for ly in policy.layers if ly.sparsity}
    if sparsity:
        out = magnitude_prune(out, sparsity)
    if policy.has_bits:
        from amc.quantization import quantize_model

        w_bits, a_bits = policy.bits()
        needs_cal = any(b is not None and b < 32 for b in a_bits.values())
        if needs_cal and quant_calibration is None:
            raise AmcError("this policy quantizes activations: pass quant_calibration images")
        # a model made above (pruned, sparse) is ours: quantize it in place instead of copying it again
        out = quantize_model(out, {k: v for k, v in w_bits.items() if v is not None and v < 32},
                             {k: v for k, v in a_bits.items() if v is not None and v < 32},
                             calibration=quant_calibration if needs_cal else None, cache=quant_cache,
                             inplace=out is not model)
    if out is model:
        import copy

        out = copy.deepcopy(model)
    return out
