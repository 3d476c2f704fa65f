"""The layer graph: compressible layers in execution order and the channel groups that prune together.

Two views of one model, built once by tracing it on an example input:

* :class:`LayerInfo` per ``nn.Conv2d`` / ``nn.Linear`` in execution order (one forward pass with
  hooks): shapes, kernel, stride, groups, MACs and params.
* :class:`PrunableGroup` per set of output channels that must be removed together (residual adds,
  depthwise pairs, concatenations), from Torch-Pruning's ``DependencyGraph``. A group is one decision
  of the search. The classifier's outputs and the network input are never pruned; groups that touch a
  grouped (non-depthwise) convolution or an unwrapped parameter are left out (kept whole) because
  removing channels there would break the grouping.

MACs are multiply-accumulates per sample (batch 1): ``out * in/groups * kh * kw * H_out * W_out`` for a
convolution and ``out * in`` for a linear layer, the unit AMC and most papers quote (PyTorch's
``FlopCounterMode`` reports 2x this).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from amc.errors import AmcError

log = logging.getLogger(__name__)

__all__ = ["LayerInfo", "PrunableGroup", "GroupItem", "LayerGraph", "count_macs_params"]

COMPRESSIBLE = (nn.Conv2d, nn.Linear)


@dataclass
class LayerInfo:
    """One compressible layer (``nn.Conv2d`` or ``nn.Linear``), as traced at batch 1."""

    index: int  # position in execution order
    name: str  # module name in ``model.named_modules()``
    kind: str  # "conv" | "depthwise" | "grouped" | "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    in_size: tuple[int, int]  # input spatial (H, W); (1, 1) for linear
    out_size: tuple[int, int]
    macs: int  # per sample
    params: int  # weight + bias elements
    weight_params: int  # weight elements only (what bit widths apply to)

    @property
    def is_conv(self) -> bool:
        return self.kind != "linear"


@dataclass
class GroupItem:
    """One pruning operation inside a group: a module dimension and which group channels it follows."""

    module: str  # module name
    dim: str  # "out" or "in"
    idxs: np.ndarray  # indices in the module's dimension, shape (n,)
    root_idxs: np.ndarray  # the group channel each of those indices follows, shape (n,)
    handler: object  # Torch-Pruning pruning function for (module, dim)


@dataclass
class PrunableGroup:
    """A set of output channels pruned together (one search decision)."""

    index: int
    leader: str  # first layer (execution order) whose outputs are these channels
    channels: int  # number of channels in the group
    out_layers: list[str]  # compressible layers whose output channels are the group's
    in_layers: list[str]  # compressible layers whose input channels follow the group
    items: list[GroupItem] = field(repr=False, default_factory=list)
    tp_group: object = field(repr=False, default=None)  # the Torch-Pruning group (for importance scores)

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.out_layers + self.in_layers))


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return "linear"
    if m.groups == 1:
        return "conv"
    if m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
        return "depthwise"
    return "grouped"


def _trace_layers(model: nn.Module, example_input: torch.Tensor) -> list[LayerInfo]:
    records: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    seen: set[str] = set()
    name_of = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        name = name_of[module]
        if name in seen:
            raise AmcError(
                f"layer {name!r} runs twice in one forward pass (shared weights); amc cannot compress a "
                "reused layer: give each use its own module"
            )
        seen.add(name)
        records.append((name, module, tuple(inputs[0].shape), tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COMPRESSIBLE)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    except AmcError:
        raise
    except Exception as e:  # a model we cannot run on this input
        raise AmcError(f"could not trace the model on an input of shape {tuple(example_input.shape)}: {e}") from e
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    layers = []
    for i, (name, m, in_shape, out_shape) in enumerate(records):
        if isinstance(m, nn.Conv2d):
            k, s = _pair(m.kernel_size), _pair(m.stride)
            hi, wi = in_shape[-2:]
            ho, wo = out_shape[-2:]
            w = m.weight.numel()
            macs = m.out_channels * (m.in_channels // m.groups) * k[0] * k[1] * ho * wo
            layers.append(LayerInfo(i, name, _kind(m), m.in_channels, m.out_channels, k, s, m.groups,
                                    (hi, wi), (ho, wo), int(macs),
                                    w + (m.bias.numel() if m.bias is not None else 0), w))
        else:
            # a Linear applied to (N, *, in): count every position it is applied to
            positions = int(np.prod(in_shape[1:-1])) if len(in_shape) > 2 else 1
            w = m.weight.numel()
            layers.append(LayerInfo(i, name, "linear", m.in_features, m.out_features, (1, 1), (1, 1), 1,
                                    (1, 1), (1, 1), int(m.in_features * m.out_features * positions),
                                    w + (m.bias.numel() if m.bias is not None else 0), w))
    if not layers:
        raise AmcError("the model has no nn.Conv2d or nn.Linear layer: nothing to compress")
    return layers


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """Direct count on a (possibly pruned) model: (MACs of conv/linear layers per sample, all parameters)."""
    layers = _trace_layers(model, example_input[:1])
    return sum(ly.macs for ly in layers), sum(p.numel() for p in model.parameters())


class LayerGraph:
    """Compressible layers and prunable channel groups of one model.

    Build with :meth:`build`; the model itself is not modified. ``ignored_layers`` names layers whose
    output channels must never be pruned (the last layer, i.e. the classifier, always is).
    """

    def __init__(self, layers: list[LayerInfo], groups: list[PrunableGroup], example_shape: tuple[int, ...],
                 dependency_graph: tp.DependencyGraph | None = None) -> None:
        self.layers = layers
        self.groups = groups
        self.example_shape = example_shape
        self.dependency_graph = dependency_graph
        self._by_name = {ly.name: ly for ly in layers}

    def layer(self, name: str) -> LayerInfo:
        return self._by_name[name]

    @property
    def total_macs(self) -> int:
        return sum(ly.macs for ly in self.layers)

    @property
    def total_weight_params(self) -> int:
        return sum(ly.weight_params for ly in self.layers)

    @classmethod
    def build(cls, model: nn.Module, example_input: torch.Tensor, *,
              ignored_layers: list[str] | None = None) -> LayerGraph:
        example_input = example_input[:1]
        layers = _trace_layers(model, example_input)
        modules = dict(model.named_modules())
        ignored = set(ignored_layers or [])
        unknown = ignored - set(modules)
        if unknown:
            raise AmcError(f"ignored layer(s) {sorted(unknown)} not found in the model")
        ignored.add(layers[-1].name)  # the classifier's outputs are never pruned
        # grouped (non-depthwise) convs: removing their input or output channels would break the grouping
        grouped = {ly.name for ly in layers if ly.kind == "grouped"}
        ignored.update(grouped)

        was_training = model.training
        grads = [p.requires_grad for p in model.parameters()]
        model.eval()
        try:
            for p in model.parameters():  # Torch-Pruning traces autograd: parameters must require grad
                p.requires_grad_(True)
            with torch.enable_grad():
                dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_input, verbose=False)
        except Exception as e:
            raise AmcError(f"Torch-Pruning could not trace the model's channel dependencies: {e}") from e
        finally:
            model.train(was_training)
            for p, g in zip(model.parameters(), grads):
                p.requires_grad_(g)

        name_of = {m: n for n, m in model.named_modules()}
        order = {ly.name: ly.index for ly in layers}
        groups: list[PrunableGroup] = []
        for tp_group in dg.get_all_groups(ignored_layers=[modules[n] for n in ignored if n in modules],
                                          root_module_types=COMPRESSIBLE):
            group = _convert_group(dg, tp_group, name_of, order, ignored, grouped)
            if group is not None:
                groups.append(group)
        groups.sort(key=lambda g: order[g.leader])
        for i, g in enumerate(groups):
            g.index = i
        log.debug("layer graph: %d layers, %d prunable groups", len(layers), len(groups))
        return cls(layers, groups, tuple(example_input.shape), dg)


def _convert_group(dg: tp.DependencyGraph, tp_group: object, name_of: dict[nn.Module, str],
                   order: dict[str, int], ignored: set[str], grouped: set[str]) -> PrunableGroup | None:
    items: dict[tuple[str, str], GroupItem] = {}
    channels = None
    for item in tp_group.items:  # type: ignore[attr-defined]
        dep = item.dep
        module = dep.target.module
        handler = dep.handler
        idxs = np.asarray(item.idxs, dtype=np.int64)
        roots = np.asarray(item.root_idxs, dtype=np.int64)
        if channels is None:
            channels = len(roots)
        if isinstance(module, nn.Parameter):
            return None  # an unwrapped parameter: not handled, keep the group whole
        if not isinstance(module, nn.Module) or module not in name_of:
            continue  # a functional op (add, cat, reshape, output): nothing to slice
        name = name_of[module]
        dim = "out" if dg.is_out_channel_pruning_fn(handler) else "in"
        if (isinstance(module, COMPRESSIBLE) and dim == "out" and name in ignored) or name in grouped:
            return None
        key = (name, dim)
        if key in items:  # merge (e.g. two paths into one module)
            old = items[key]
            both = np.concatenate([old.idxs, idxs])
            both_roots = np.concatenate([old.root_idxs, roots])
            _, first = np.unique(both, return_index=True)
            items[key] = GroupItem(name, dim, both[first], both_roots[first], handler)
        else:
            items[key] = GroupItem(name, dim, idxs, roots, handler)
    if not channels:
        return None
    out_layers = sorted({n for (n, d) in items if d == "out" and n in order}, key=order.get)
    in_layers = sorted({n for (n, d) in items if d == "in" and n in order}, key=order.get)
    if not out_layers:
        return None
    # a depthwise conv follows its input channels: its "out" item also prunes its inputs
    return PrunableGroup(index=-1, leader=out_layers[0], channels=int(channels), out_layers=out_layers,
                         in_layers=in_layers, items=list(items.values()), tp_group=tp_group)
