"""The layer graph: compressible layers in execution order and the channel groups that prune together.

Two views of one model, built once by tracing it on an example input:

* :class:`LayerInfo` per ``nn.Conv2d`` / ``nn.Linear`` in execution order (one forward pass with
  hooks): shapes, kernel, stride, groups, MACs and params.
* :class:`PrunableGroup` per set of output channels that must be removed together (residual adds,
  depthwise pairs, concatenations), from Torch-Pruning's ``DependencyGraph``. A group is one decision
  of the search. The classifier's outputs and the network input are never pruned.

Grouped (non-depthwise) convolutions are pruned the way Torch-Pruning prunes them: the same positions
leave every convolution group, so ``groups`` stays valid. A group whose channels feed or leave a
convolution with ``G`` groups is counted in *slots*: slot ``p`` is position ``p`` in each of the ``G``
convolution groups (``unit = G`` channels that leave together). Keep ratios and ``lbound`` apply to
slots, so every kept count is a multiple of ``G``; ``round_to`` still rounds the real channel count
(:meth:`PrunableGroup.slot_round_to`).

Structures that cannot be pruned are kept whole instead of failing the model, with one log line that
names the layers: a reshape that Torch-Pruning cannot map (ShuffleNet's channel shuffle
``view -> transpose -> view``), an unwrapped ``nn.Parameter``, or a grouping no slot layout satisfies.

MACs are multiply-accumulates per sample (batch 1): ``out * in/groups * kh * kw * H_out * W_out`` for a
convolution and ``out * in`` for a linear layer, the unit AMC and most papers quote (PyTorch's
``FlopCounterMode`` reports 2x this).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp
from torch.overrides import TorchFunctionMode

from amc.errors import AmcError
from amc.utils import eval_mode, run_hooked

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
    """A set of output channels pruned together (one search decision).

    ``channels`` counts the decision's units: plain channels, or slots of ``unit`` channels each when
    the group touches grouped convolutions (``unit`` = the number of convolution groups).
    ``slot_of`` maps each of the Torch-Pruning root channels to its slot (``None`` when ``unit == 1``).
    """

    index: int
    leader: str  # first layer (execution order) whose outputs are these channels
    channels: int  # number of channels (slots when unit > 1) in the group
    out_layers: list[str]  # compressible layers whose output channels are the group's
    in_layers: list[str]  # compressible layers whose input channels follow the group
    items: list[GroupItem] = field(repr=False, default_factory=list)
    tp_group: object = field(repr=False, default=None)  # the Torch-Pruning group (for importance scores)
    unit: int = 1  # channels per slot (the convolution group count), 1 without grouped convs
    slot_of: np.ndarray | None = field(repr=False, default=None)  # root channel -> slot, shape (unit*channels,)

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.out_layers + self.in_layers))

    def slot_round_to(self, round_to: int) -> int:
        """``round_to`` in this group's units: kept channels (slots x ``unit``) are then multiples of
        ``round_to`` (and of ``unit``), as coarse as needed and no coarser."""
        r = max(1, int(round_to))
        return r // math.gcd(r, self.unit)


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
    try:
        run_hooked(model, example_input, handles)
    except AmcError:
        raise
    except Exception as e:  # a model we cannot run on this input
        raise AmcError(f"could not trace the model on an input of shape {tuple(example_input.shape)}: {e}") from e

    layers = []
    for i, (name, m, in_shape, out_shape) in enumerate(records):
        w = m.weight.numel()
        params = w + (m.bias.numel() if m.bias is not None else 0)
        if isinstance(m, nn.Conv2d):
            (kh, kw), (ho, wo) = m.kernel_size, out_shape[-2:]
            macs = m.out_channels * (m.in_channels // m.groups) * kh * kw * ho * wo
            layers.append(LayerInfo(i, name, _kind(m), m.in_channels, m.out_channels, (kh, kw), m.stride,
                                    m.groups, in_shape[-2:], (ho, wo), int(macs), params, w))
        else:
            # a Linear applied to (N, *, in): count every position it is applied to
            positions = int(np.prod(in_shape[1:-1]))
            layers.append(LayerInfo(i, name, "linear", m.in_features, m.out_features, (1, 1), (1, 1), 1,
                                    (1, 1), (1, 1), m.in_features * m.out_features * positions, params, w))
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

    def __init__(self, layers: list[LayerInfo], groups: list[PrunableGroup],
                 example_shape: tuple[int, ...]) -> None:
        self.layers = layers
        self.groups = groups
        self.example_shape = example_shape
        self._by_name = {ly.name: ly for ly in layers}

    def layer(self, name: str) -> LayerInfo:
        return self._by_name[name]

    @property
    def total_macs(self) -> int:
        return sum(ly.macs for ly in self.layers)

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
        grouped = {ly.name: modules[ly.name] for ly in layers if ly.kind == "grouped"}

        grads = [p.requires_grad for p in model.parameters()]
        try:
            for p in model.parameters():  # Torch-Pruning traces autograd: parameters must require grad
                p.requires_grad_(True)
            shapes = _ShapeRecorder()
            with eval_mode(model), torch.enable_grad():
                dg = tp.DependencyGraph()
                try:
                    with shapes:
                        dg.build_dependency(model, example_inputs=example_input, verbose=False)
                except ArithmeticError:  # a reshape mapping that fails (a channel shuffle): handled below
                    if not getattr(dg, "module2node", None):
                        raise
                opaque = _isolate_reshapes(dg, shapes.shapes)
        except Exception as e:
            raise AmcError(f"Torch-Pruning could not trace the model's channel dependencies: {e}") from e
        finally:
            for p, g in zip(model.parameters(), grads):
                p.requires_grad_(g)

        name_of = {m: n for n, m in model.named_modules()}
        order = {ly.name: ly.index for ly in layers}
        groups: list[PrunableGroup] = []
        kept_whole: dict[str, set[str]] = {}
        for root, tp_group in _tp_groups(dg, [modules[ly.name] for ly in layers]):
            if isinstance(tp_group, Exception):
                reason = f"Torch-Pruning cannot follow their channels: {tp_group!r}"
                kept_whole.setdefault(reason, set()).add(name_of[root])
                continue
            group = _convert_group(dg, tp_group, name_of, order, ignored, grouped, opaque)
            if isinstance(group, PrunableGroup):
                groups.append(group)
            elif group is not None:  # (reason, layers)
                kept_whole.setdefault(group[0], set()).update(group[1])
        pruned = {n for g in groups for n in g.out_layers}
        whole = [f"{reason}: {', '.join(sorted(names - pruned, key=order.get))}"
                 for reason, names in kept_whole.items() if names - pruned]
        if whole:
            log.warning("kept whole (not pruned) -- %s", "; ".join(whole))
        groups.sort(key=lambda g: order[g.leader])
        for i, g in enumerate(groups):
            g.index = i
        log.debug("layer graph: %d layers, %d prunable groups", len(layers), len(groups))
        return cls(layers, groups, tuple(example_input.shape))


def _tp_groups(dg: tp.DependencyGraph, roots: list[nn.Module]) -> Iterator[tuple[nn.Module, object]]:
    """Torch-Pruning's groups rooted at each layer's output channels, as ``DependencyGraph.get_all_groups``
    walks them (a layer already pruned as part of an earlier group is not a root again), but a root
    whose group Torch-Pruning fails to build yields ``(root, exception)`` instead of failing the model."""
    visited: set[nn.Module] = set()
    for m in roots:
        if m in visited or m not in dg.module2node:
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        try:
            group = dg.get_pruning_group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))))
        except Exception as e:  # an index mapping Torch-Pruning gets wrong for this structure
            yield m, e
            continue
        visited.update(dep.target.module for dep, _ in group if dg.is_out_channel_pruning_fn(dep.handler))
        yield m, group


class _ShapeRecorder(TorchFunctionMode):
    """Records (input shape, output shape) of every op by its output's ``grad_fn`` during tracing."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[object, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.grad_fn is not None and args and isinstance(args[0], torch.Tensor):
            self.shapes[out.grad_fn] = (tuple(args[0].shape), tuple(out.shape))
        return out


def _channel_preserving(shapes: tuple[tuple[int, ...], tuple[int, ...]] | None) -> bool:
    """A reshape whose channel mapping Torch-Pruning gets right: a flatten ``(N, C, *s) -> (N, C*prod(s))``,
    an unflatten ``(N, C) -> (N, C, 1, ...)`` or one that keeps dims 0 and 1."""
    if shapes is None:
        return True  # not seen (e.g. a view inside an autograd function): leave it to Torch-Pruning
    a, b = shapes
    if len(a) < 2 or len(b) < 2 or a[0] != b[0]:
        return False
    if a[:2] == b[:2]:  # only the spatial / trailing dims change
        return True
    return len(b) == 2 and b[1] == int(np.prod(a[1:]))


def _isolate_reshapes(dg: tp.DependencyGraph, shapes: dict) -> set[nn.Module]:
    """Reshapes that mix channels with other dims (ShuffleNet's ``view -> transpose -> view``) become
    opaque: their index mappings are reset to identity and their type to element-wise (Torch-Pruning
    redoes the mappings for every group it builds), and every group through them is kept whole.
    The remaining mappings (concat, split, flatten ...) are then set node by node."""
    from torch_pruning.dependency import index_mapping as im

    ops = tp.ops.OPTYPE
    opaque: set[nn.Module] = set()
    for module, node in dg.module2node.items():
        if node.type == ops.RESHAPE and not _channel_preserving(shapes.get(node.grad_fn)):
            opaque.add(module)
            node.type = ops.ELEMENTWISE
    for module, node in dg.module2node.items():
        for dep in node.dependencies:
            if module in opaque or dep.target.module in opaque:
                dep.index_mapping = [tp.dependency.constants.INDEX_MAPPING_PLACEHOLDER] * 2
    update = {ops.CONCAT: im.update_concat_index_mapping, ops.SPLIT: im.update_split_index_mapping,
              ops.RESHAPE: im.update_reshape_index_mapping, ops.UNBIND: im.update_unbind_index_mapping,
              ops.EXPAND: im.update_expand_index_mapping, ops.SLICE: im.update_slice_index_mapping}
    for module, node in dg.module2node.items():
        if node.type in update:
            try:
                update[node.type](dg, node)
            except ArithmeticError:
                if node.type != ops.RESHAPE:
                    raise
                opaque.add(module)
                node.type = ops.ELEMENTWISE
    return opaque


def _slots(items: dict[tuple[str, str], GroupItem], channels: int, grouped: dict[str, nn.Module]
           ) -> tuple[np.ndarray, int] | None:
    """Slot of every root channel so that removing whole slots keeps each grouped conv's groups equal.

    For a convolution with ``G`` groups, the root channels at the same position ``p`` of its ``G``
    convolution groups must leave together; joining those sets over every grouped conv of the group
    gives the slots. ``None`` when no layout works: a slot then misses a convolution group, slots differ
    in size, or some item holds an unequal share of each slot (the cost model would not be exact).
    """
    parent = np.arange(channels)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    checks = []
    for (name, dim), it in items.items():
        m = grouped.get(name)
        if m is None:
            continue
        size = (m.out_channels if dim == "out" else m.in_channels) // m.groups  # per convolution group
        conv_group, pos = it.idxs // size, it.idxs % size
        checks.append((it, conv_group, m.groups))
        for p in np.unique(pos):
            roots = it.root_idxs[pos == p]
            if sorted(conv_group[pos == p].tolist()) != list(range(m.groups)):
                return None  # position p is not removed from every convolution group
            r0 = find(int(roots[0]))
            for r in roots[1:]:
                parent[find(int(r))] = r0
    labels = np.array([find(i) for i in range(channels)])
    _, slot_of = np.unique(labels, return_inverse=True)
    n_slots = int(slot_of.max()) + 1
    sizes = np.bincount(slot_of, minlength=n_slots)
    if n_slots == channels:
        return slot_of, 1
    if (sizes != sizes[0]).any():
        return None
    for it in items.values():
        share = np.bincount(slot_of[it.root_idxs], minlength=n_slots)
        if (share != share[0]).any():
            return None
    for it, conv_group, g in checks:  # removing one slot must take one channel from each conv group
        for s in range(n_slots):
            sel = slot_of[it.root_idxs] == s
            if len(np.unique(conv_group[sel])) != g or np.ptp(np.bincount(conv_group[sel], minlength=g)) != 0:
                return None
    return slot_of, int(sizes[0])


def _convert_group(dg: tp.DependencyGraph, tp_group: object, name_of: dict[nn.Module, str],
                   order: dict[str, int], ignored: set[str], grouped: dict[str, nn.Module],
                   opaque: set[nn.Module]) -> PrunableGroup | tuple[str, list[str]] | None:
    """The :class:`PrunableGroup` of a Torch-Pruning group; ``None`` when it is not a decision (its
    root is ignored), or ``(reason, layers)`` when its channels must stay whole."""
    items: dict[tuple[str, str], GroupItem] = {}
    channels = len(tp_group.items[0].root_idxs) if tp_group.items else 0  # type: ignore[attr-defined]
    blocked: str | None = None
    for item in tp_group.items:  # type: ignore[attr-defined]
        module, handler = item.dep.target.module, item.dep.handler
        idxs = np.asarray(item.idxs, dtype=np.int64)
        roots = np.asarray(item.root_idxs, dtype=np.int64)
        if isinstance(module, nn.Parameter):
            blocked = blocked or "an unwrapped nn.Parameter follows these channels"
            continue
        if module in opaque:
            blocked = blocked or "a reshape Torch-Pruning cannot map, e.g. a channel shuffle"
            continue
        if not isinstance(module, nn.Module) or module not in name_of:
            continue  # a functional op (add, cat, reshape, output): nothing to slice
        name = name_of[module]
        dim = "out" if dg.is_out_channel_pruning_fn(handler) else "in"
        if dim == "out" and name in ignored:  # a layer the user (or the classifier rule) keeps whole
            return None
        key = (name, dim)
        if key in items:  # merge (e.g. two paths into one module)
            old = items[key]
            idxs, roots = np.concatenate([old.idxs, idxs]), np.concatenate([old.root_idxs, roots])
            _, first = np.unique(idxs, return_index=True)
            idxs, roots = idxs[first], roots[first]
        items[key] = GroupItem(name, dim, idxs, roots, handler)
    if not channels:
        return None
    out_layers = sorted({n for (n, d) in items if d == "out" and n in order}, key=order.get)
    in_layers = sorted({n for (n, d) in items if d == "in" and n in order}, key=order.get)
    if not out_layers:
        return None
    if blocked:
        return blocked, out_layers
    unit, slot_of = 1, None
    if any(n in grouped for (n, _) in items):
        layout = _slots(items, int(channels), grouped)
        if layout is None:
            return "grouped convolutions whose groups no channel slot layout keeps equal", out_layers
        slots, unit = layout
        if unit > 1:
            slot_of = slots
            items = {k: GroupItem(it.module, it.dim, it.idxs, slots[it.root_idxs], it.handler)
                     for k, it in items.items()}
            channels = int(channels) // unit
    # a depthwise conv follows its input channels: its "out" item also prunes its inputs
    return PrunableGroup(index=-1, leader=out_layers[0], channels=int(channels), out_layers=out_layers,
                         in_layers=in_layers, items=list(items.values()), tp_group=tp_group, unit=unit,
                         slot_of=slot_of)
