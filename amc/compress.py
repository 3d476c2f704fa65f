"""Build the compressed model a policy describes: :func:`apply_policy`, the one code path used by the
search's reward (the env), ``amc apply``, ``amc finetune``, ``amc export``, ``amc compare`` and
``amc bench``, so that applying a policy reproduces what the search evaluated.

Order: channel pruning (+ optional LS reconstruction) -> unstructured sparsity -> quantization ->
the evaluation proxy's repairs (:mod:`amc.proxies`: KD steps, norm statistics).

:func:`draw_inputs` draws the train images all of these read (reconstruction, norm statistics,
activation ranges, KD batches) from a fixed seed: the calibration recipe, written once.
:func:`inputs_for_policy` draws them the way a policy's ``scoring`` records; ``apply_policy(model,
policy, splits=...)`` does that itself, so a caller rebuilds the search's model from the policy and
the data alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.policy import Policy
from amc.proxies import Proxy, ProxyData, apply_proxy, make_proxy_data, parse_proxy
from amc.pruning import Pruner, magnitude_prune
from amc.utils import model_device

if TYPE_CHECKING:
    from amc.quantization import QuantCache

__all__ = ["apply_policy", "check_policy_matches", "policy_mismatch", "PolicyInputs", "draw_inputs", "inputs_for_policy"]

@dataclass
class PolicyInputs:
    """The train images a policy's model is built from (see :func:`apply_policy`'s arguments)."""

    calibration: torch.Tensor | None = None
    quant_calibration: list[torch.Tensor] | None = None
    proxy_data: ProxyData | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"calibration": self.calibration, "quant_calibration": self.quant_calibration,
                "proxy_data": self.proxy_data}


def draw_inputs(splits: Any, *, proxy: Proxy, calibration_size: int, calibration_seed: int, quantizes: bool,
                device: torch.device | str, teacher: nn.Module | None = None) -> PolicyInputs:
    """Draw what the build needs from ``splits``' train split (never val), seeded by ``calibration_seed``:
    ``calibration_size`` images for reconstruction and norm statistics, two batches of 128 for
    activation ranges when ``quantizes``, and the KD batches of an ``ft:K`` proxy (``teacher``: the
    uncompressed model)."""
    # the proxy's images (None when it reads none); the reconstruction samples the same images
    out = PolicyInputs(proxy_data=make_proxy_data(splits, proxy, calibration_size=calibration_size,
                                                  seed=calibration_seed, device=device, teacher=teacher))
    if proxy.reconstruct:
        out.calibration = out.proxy_data.images
    if quantizes:
        out.quant_calibration = [x for x, _ in splits.calibration_batches(2, 128, calibration_seed, device=device)]
    return out


def inputs_for_policy(policy: Policy, splits: Any, *, device: torch.device | str,
                      teacher: nn.Module | None) -> PolicyInputs:
    """:func:`draw_inputs` as ``policy.scoring`` records them (``None`` data when the policy needs none)."""
    proxy = parse_proxy(policy.scoring.proxy)
    pruned = policy.granularity == "channel" and any(g.channels < g.total for g in policy.groups)
    if not pruned and proxy.reconstruct and not proxy.bn and not proxy.ft_steps:
        proxy = parse_proxy("vanilla")  # reconstruction of an unpruned model has nothing to do
    quantizes = any(ly.a_bits is not None and ly.a_bits < 32 for ly in policy.layers)
    if splits is None:
        if proxy.needs_calibration or quantizes:
            need = "activation ranges" if not proxy.needs_calibration else f"the {proxy.name} proxy"
            raise AmcError(f"this policy needs train images for {need}: pass --dataset (and --data-dir)")
        return PolicyInputs()
    return draw_inputs(splits, proxy=proxy, calibration_size=policy.scoring.calibration_size,
                       calibration_seed=policy.scoring.calibration_seed, quantizes=quantizes, device=device,
                       teacher=teacher)


def policy_mismatch(policy: Policy, graph: Any) -> str | None:
    """The first difference between the policy's groups and layers and the model's ``graph`` (by module
    name and size), or ``None`` when they match."""
    if policy.granularity == "channel" and policy.groups:
        if len(policy.groups) != len(graph.groups):
            return (f"policy has {len(policy.groups)} prunable groups but the model has {len(graph.groups)}: "
                    "it was found on another architecture (use amc.transfer for a sibling model)")
        for pg, g in zip(policy.groups, graph.groups):
            if pg.layers[0] != g.leader or pg.total != g.channels:
                return (f"policy group led by {pg.layers[0]!r} ({pg.total} channels) does not match the "
                        f"model's group led by {g.leader!r} ({g.channels} channels)")
    names = {ly.name for ly in graph.layers}
    missing = [ly.name for ly in policy.layers if ly.name not in names]
    return f"policy names layer(s) {missing[:5]} that the model does not have" if missing else None


def check_policy_matches(policy: Policy, pruner: Pruner) -> None:
    """Raise :class:`AmcError` (naming the first difference) unless the policy's groups and layers are
    the model's, by module name and size."""
    problem = policy_mismatch(policy, pruner.graph)
    if problem:
        raise AmcError(problem)


def apply_policy(model: nn.Module, policy: Policy, *, splits: Any = None, device: torch.device | str | None = None,
                 example_input: torch.Tensor | None = None, pruner: Pruner | None = None,
                 calibration: torch.Tensor | None = None,
                 quant_calibration: torch.Tensor | Sequence[torch.Tensor] | None = None,
                 quant_cache: QuantCache | None = None, proxy_data: ProxyData | None = None,
                 check: bool = True) -> nn.Module:
    """A new model compressed as ``policy`` says; ``model`` is left untouched.

    Args:
        model: the uncompressed, trained model the policy was found on (or one of the same architecture).
        policy: the policy.
        splits: the dataset (:class:`amc.data.DatasetSplits`) the policy was scored on: the train
            images the build needs are drawn from it as ``policy.scoring`` records
            (:func:`inputs_for_policy`, ``model`` as the KD proxy's teacher), and its first val image
            is the tracing input. Exclusive with ``calibration``, ``quant_calibration`` and ``proxy_data``.
        device: where drawn images go (default: ``model``'s device).
        example_input: an input batch for tracing (needed unless ``pruner`` or ``splits`` is given).
        pruner: a :class:`Pruner` of ``model`` to reuse (the search passes its own: no re-tracing); one
            seeded otherwise than ``policy.scoring.calibration_seed`` is re-seeded (same graph).
        calibration: images for the least-squares reconstruction when the policy asks for it.
        quant_calibration: images for activation-range calibration when the policy has activation bits
            (ranges come from the float, possibly pruned, model's statistics on them).
        quant_cache: an :class:`amc.quantization.QuantCache` shared across calls (the search keeps one):
            weight codes, activation statistics and scales seen before are reused. The model is the same
            as without it, only built faster.
        proxy_data: the inputs of the policy's evaluation proxy (:func:`draw_inputs`); the ``bn`` and
            ``ft:K`` proxies run last, on the finished model.
    """
    proxy = parse_proxy(policy.scoring.proxy)
    seed = policy.scoring.calibration_seed  # picks random channels and the sampled reconstruction positions
    if splits is not None:
        if calibration is not None or quant_calibration is not None or proxy_data is not None:
            raise AmcError("apply_policy takes splits (images drawn as the policy records) or the images, not both")
        device = device if device is not None else model_device(model)
        inputs = inputs_for_policy(policy, splits, device=device, teacher=model)
        calibration, quant_calibration, proxy_data = inputs.calibration, inputs.quant_calibration, inputs.proxy_data
        if pruner is None and example_input is None:
            example_input = splits.tensors("val" if len(splits.val) else "test", device=device, limit=1)[0]
    if pruner is None:
        if example_input is None:
            raise AmcError("apply_policy needs example_input (an input batch), splits or a Pruner")
        pruner = Pruner(model, example_input, seed=seed)
    elif pruner.seed != seed:
        pruner = Pruner(pruner.model, pruner.example_input, graph=pruner.graph, seed=seed)
    if check:
        check_policy_matches(policy, pruner)
    out = model
    if policy.granularity == "channel" and any(g.channels < g.total for g in policy.groups):
        # (a reconstructing policy without calibration images: the Pruner says to pass them)
        out = pruner.prune([g.channels / g.total for g in policy.groups],
                           importance=str(policy.pruning.get("importance", "l1")),
                           reconstruct=proxy.reconstruct, calibration=calibration, round_to=1)
    sparsity = {ly.name: ly.sparsity for ly in policy.layers if ly.sparsity}
    if sparsity:
        out = magnitude_prune(out, sparsity)
    if policy.has_bits:
        from amc.quantization import quantize_model

        w_bits, a_bits = ({name: b for name, b in bits.items() if b is not None and b < 32}
                          for bits in policy.bits())
        if a_bits and quant_calibration is None:
            raise AmcError("this policy quantizes activations: pass quant_calibration images")
        # a model made above (pruned, sparse) is ours: quantize it in place instead of copying it again
        out = quantize_model(out, w_bits, a_bits, calibration=quant_calibration if a_bits else None,
                             cache=quant_cache, inplace=out is not model)
    if out is model:
        import copy

        out = copy.deepcopy(model)
    if proxy.bn or proxy.ft_steps:
        apply_proxy(out, proxy, proxy_data)
    return out
