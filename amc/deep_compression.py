"""Deep Compression end to end (Han, Mao & Dally, ICLR 2016, arXiv 1510.00149).

The three-stage pipeline of the paper, on top of amc's pieces:

1. **Pruning** (section 2): magnitude pruning to each layer's density in ``prune_steps`` steps
   (step ``k`` of ``K`` prunes ``(1 - density) k / K`` of the layer), each followed by retraining
   with the mask held fixed (:func:`amc.finetune.finetune`: pruned weights stay exactly zero).
2. **Trained quantization / weight sharing** (section 3): per layer, 1-D k-means with linear
   initialisation over the kept weights gives ``2^b - 1`` shared values; code ``2^b - 1`` is the
   pruned weights' 0.0 (so the codes fit ``b`` bits). The shared values are then fine-tuned (and
   nothing else): each layer is wrapped in a :class:`SharedWeight` whose weight is
   ``centroids[codes]``, so the gradient of a centroid is the sum of the gradients of the weights
   that share it (the paper's eq. 3), and each layer keeps its ``2^b`` values (0.0 included).
3. **Huffman coding** (section 4) of the codes and of the relative sparse indices
   (:mod:`amc.sparse`), in the exported file.

After each stage the model is exported (:func:`amc.export.export`: sparse layers in
:mod:`amc.sparse`'s smallest layout) and measured: the file's size, the compression ratio against
the float32 parameters (the paper's "original size": 4 bytes per parameter), the part of the file
that holds conv/linear weights (values, indices, codebooks: what the paper counts), and test top-1.

Run directory (every stage resumable; ``resume=True`` skips finished training)::

    prune1/ ... pruneK/     amc.training.train runs (retraining with masks)
    share/                  the centroid fine-tuning run
    stage0-original.amc ... stage3-huffman.amc   the exported model after each stage
    deep_compression.json   the table (rewritten after each stage) and the config
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from amc.config.flat import FlatConfig, flat_config
from amc.config.train import DeepCompressionOptions
from amc.errors import AmcError
from amc.export import export, load
from amc.finetune import FinetuneConfig, finetune
from amc.graph import LayerGraph
from amc.policy import LayerDecision, Policy
from amc.pruning import magnitude_prune
from amc.quantization import QuantConfig, QuantizedWeight, QuantWrapper, quantized_layers
from amc.quantization.schemes import kmeans_1d
from amc.quantization.wrapper import layer_forward
from amc.training import evaluate, train
from amc.utils import atomic_write_json, resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "DeepCompressionConfig",
    "DeepCompressionResult",
    "SharedWeight",
    "deep_compress",
    "kmeans_1d",
    "layer_table",
    "make_policy",
    "policy_targets",
    "weight_bytes",
    "share_weights",
    "shared_to_quantized",
]

FLOAT_BYTES = 4


class _DeepCompressionBase(FlatConfig):
    def _finetune_config(self, *, epochs: int, lr: float, weight_decay: float | None = None) -> Any:
        return FinetuneConfig(epochs=max(1, epochs), lr=lr, batch_size=self.batch_size,
                              weight_decay=self.weight_decay if weight_decay is None else weight_decay,
                              kd=self.kd, kd_temperature=self.kd_temperature, kd_alpha=self.kd_alpha,
                              augment=self.augment, steps_per_epoch=self.steps_per_epoch, seed=self.seed,
                              device=self.device, num_threads=self.num_threads)


#: Settings of :func:`deep_compress`, flat: the leaves of :class:`amc.config.train.DeepCompressionOptions`
#: (prune_steps, prune_epochs, prune_lr; share_epochs, share_lr, kmeans_iters, huffman; kd, kd_temperature,
#: kd_alpha; batch_size, weight_decay, augment, steps_per_epoch, seed, device, num_threads), which owns
#: their defaults, descriptions and checks.
DeepCompressionConfig = flat_config("DeepCompressionConfig", DeepCompressionOptions, module=__name__,
                                    base=_DeepCompressionBase, doc="Settings of deep_compress.")


# --------------------------------------------------------------------------------------------------
# weight sharing


class SharedWeight(nn.Module):
    """A conv/linear layer whose weight is ``table[codes]`` with ``table = [centroids..., 0.0]``:
    ``2^b - 1`` trainable shared values and the pruned weights' fixed zero (code ``2^b - 1``).

    The wrapped layer's own weight is not used; the gradient of a centroid is the sum of the
    gradients of the weights coded to it (indexing's backward adds them up: the paper's eq. 3).
    """

    def __init__(self, module: nn.Module, codes: torch.Tensor, centroids: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("codes", codes.to(torch.long))
        self.centroids = nn.Parameter(centroids.detach().float().clone())

    def shared_weight(self) -> torch.Tensor:
        table = torch.cat([self.centroids, self.centroids.new_zeros(1)])  # (2^b,)
        return table[self.codes]  # the layer's weight shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_forward(self.module, x, self.shared_weight())


def share_weights(model: nn.Module, bits: Mapping[str, int], *, iters: int = 30) -> nn.Module:
    """Replace each named conv/linear layer of ``model`` (in place) by a :class:`SharedWeight`:
    k-means over the layer's nonzero weights with ``2^bits - 1`` centroids; zeros get code
    ``2^bits - 1``. Returns ``model``."""
    for name, b in bits.items():
        layer = _layer(model, name)
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8:
            raise AmcError(f"layer {name!r}: weight-sharing bits must be an int in 1..8, got {b!r}")
        w = layer.weight.detach()
        k = (1 << b) - 1
        codes = torch.full(w.shape, k, dtype=torch.long, device=w.device)
        keep = w != 0
        c, cent = kmeans_1d(w[keep].cpu(), k, iters=iters)  # (an all-zero layer: k zeros)
        codes[keep] = c.to(w.device)
        model.set_submodule(name, SharedWeight(layer, codes, cent.to(w.device)))
    return model


def shared_to_quantized(model: nn.Module) -> nn.Module:
    """Replace every :class:`SharedWeight` by a k-means :class:`amc.quantization.QuantWrapper` pinned
    to the same codes and codebook (in place), so that :func:`amc.export.export` packs it; the
    outputs are unchanged."""
    for name, m in list(model.named_modules()):
        if not isinstance(m, SharedWeight):
            continue
        table = torch.cat([m.centroids.detach(), m.centroids.new_zeros(1)]).float().cpu()
        bits = max(1, (len(table) - 1).bit_length())
        qw = QuantizedWeight(m.codes.detach().to(torch.uint8).cpu(), None, bits, "kmeans", table)
        wrapper = QuantWrapper(m.module, w_bits=bits, config=QuantConfig(weight_scheme="kmeans"), name=name)
        wrapper.pin_quantized_weight(qw)  # also sets the layer's weight to table[codes]
        model.set_submodule(name, wrapper)
    return model


def _layer(model: nn.Module, name: str) -> nn.Module:
    try:
        m = model.get_submodule(name)
    except AttributeError:
        raise AmcError(f"layer {name!r} not found in the model") from None
    if not isinstance(m, (nn.Conv2d, nn.Linear)):
        raise AmcError(f"layer {name!r} is a {type(m).__name__}, not a Conv2d/Linear")
    return m


# --------------------------------------------------------------------------------------------------
# measuring a stage


def weight_bytes(path: str | os.PathLike) -> int:
    """Bytes of an exported model file that hold conv/linear weights (values, sparse indices,
    codebooks and scales): Deep Compression's accounting, without biases, norms and metadata."""
    doc = torch.load(path, map_location="cpu", weights_only=True)
    packed = doc.get("packed")
    if packed is not None:  # codes (dense or sparse layouts) + scales and codebooks
        return int(packed["codes"].numel() + FLOAT_BYTES * packed["qparams"].numel())
    sparse = doc.get("sparse")
    n = int(sparse["data"].numel()) if sparse else 0
    # the dense float conv/linear weights (the only >= 2-D "weight" tensors of the built-in models)
    n += sum(FLOAT_BYTES * v.numel() for k, v in doc["state_dict"].items() if k.endswith("weight") and v.dim() >= 2)
    return n


@dataclass
class DeepCompressionResult:
    """The compressed model (k-means layers as pinned :class:`amc.quantization.QuantWrapper`) and the
    table written to ``deep_compression.json``."""

    model: nn.Module
    table: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def policy_targets(policy: Policy) -> tuple[dict[str, float], dict[str, int]]:
    """Per-layer density (``1 - sparsity``) and weight bits of a fine-granularity policy."""
    if policy.granularity != "fine":
        raise AmcError("Deep Compression needs a fine-granularity policy (per-layer sparsity and w_bits); "
                       f"this one has granularity {policy.granularity!r}")
    density = {ly.name: 1.0 - float(ly.sparsity or 0.0) for ly in policy.layers}
    bits = {ly.name: int(ly.w_bits) for ly in policy.layers if ly.w_bits is not None and ly.w_bits < 32}
    if not bits:
        raise AmcError("the policy gives no layer weight bits (w_bits): Deep Compression shares weights by k-means "
                       "with 2^w_bits values per layer")
    return density, bits


def _test_top1(model: nn.Module, splits: Any, device: torch.device) -> float | None:
    if len(splits.split("test")) == 0:
        return None
    return evaluate(model.to(device), splits.tensors("test", device=device), batch_size=1000)


def deep_compress(
    model: nn.Module,
    splits: Any,
    policy: Policy,
    cfg: DeepCompressionConfig,
    *,
    run_dir: str | os.PathLike,
    model_spec: Mapping[str, Any] | None = None,
    resume: bool = False,
    progress: bool = False,
) -> DeepCompressionResult:
    """Run the three stages on a copy of the trained ``model`` with ``policy``'s per-layer densities
    and bits; export after each stage into ``run_dir`` and write the table (see the module docstring).

    ``resume``: finished retraining runs are loaded instead of retrained (an interrupted one
    continues from its ``last.pt``).
    """
    density, bits = policy_targets(policy)
    for name in list(density) + list(bits):
        _layer(model, name)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.num_threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    teacher = copy.deepcopy(model).to(device).eval() if cfg.kd else None
    base_bytes = FLOAT_BYTES * sum(p.numel() for p in model.parameters())
    table: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"config": cfg.to_dict(), "policy": policy.to_dict(), "float32_bytes": base_bytes,
                               "table": table}

    def record(stage: str, m: nn.Module, *, huffman: bool = False, top1: float | None = None) -> None:
        m.eval()
        path = export(m, run_dir / f"stage{len(table)}-{stage}.amc", policy=policy, model_spec=model_spec,
                      huffman=huffman)
        size = path.stat().st_size
        wbytes = weight_bytes(path)
        acc = _test_top1(m, splits, device) if top1 is None else top1
        layers = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]  # inside wrappers too
        float_wbytes = FLOAT_BYTES * sum(x.weight.numel() for x in layers)
        table.append({"stage": stage, "file_bytes": size, "ratio": base_bytes / size, "weight_bytes": wbytes,
                      "weight_ratio": float_wbytes / wbytes, "test_top1": acc, "file": str(path)})
        log.info("stage %s: %d bytes (%.1fx), weights %d bytes, test top-1 %s", stage, size, base_bytes / size,
                 wbytes, acc)
        atomic_write_json(run_dir / "deep_compression.json", summary)

    current = copy.deepcopy(model).to(device)
    record("original", current)
    sparse_layers = [n for n, d in density.items() if d < 1.0]
    for k in range(1, cfg.prune_steps + 1):
        target = {n: (1.0 - d) * k / cfg.prune_steps for n, d in density.items() if d < 1.0}
        current = magnitude_prune(current, target)
        if cfg.prune_epochs:
            finetune(current, splits, cfg._finetune_config(epochs=cfg.prune_epochs, lr=cfg.prune_lr),
                     run_dir=run_dir / f"prune{k}", teacher=teacher, resume=resume, progress=progress,
                     sparse_layers=sparse_layers, meta={"deep_compression": {"stage": "prune", "step": k}})
    record("pruned", current)

    share_weights(current, bits, iters=cfg.kmeans_iters)
    if cfg.share_epochs:
        shared = {id(m.centroids) for m in current.modules() if isinstance(m, SharedWeight)}
        for p in current.parameters():  # only the shared values train; the rest is fixed as the paper does
            p.requires_grad_(id(p) in shared)
        fcfg = cfg._finetune_config(epochs=cfg.share_epochs, lr=cfg.share_lr, weight_decay=0.0)
        train(current, splits, fcfg.train_config(), run_dir=run_dir / "share", teacher=teacher,
              kd_temperature=cfg.kd_temperature, kd_alpha=cfg.kd_alpha, resume=resume, progress=progress,
              extra_meta={"deep_compression": {"stage": "share"}})
    current = shared_to_quantized(current)
    record("quantized", current)
    record("huffman", current, huffman=cfg.huffman, top1=table[-1]["test_top1"])
    reloaded = load(table[-1]["file"], device=device)
    table[-1]["test_top1"] = _test_top1(reloaded, splits, device)  # measured on the file's model
    summary["final_file"] = table[-1]["file"]
    atomic_write_json(run_dir / "deep_compression.json", summary)
    return DeepCompressionResult(current, table, summary)


def layer_table(model: nn.Module) -> list[dict[str, Any]]:
    """Per quantized layer: weights, nonzero fraction, bits and distinct values (for reports/tests)."""
    rows = []
    for name, w in quantized_layers(model).items():
        deq = w.quantized_weight().dequantize()
        rows.append({"layer": name, "weights": int(deq.numel()), "density": float((deq != 0).float().mean()),
                     "bits": w.w_bits, "values": int(torch.unique(deq).numel())})
    return rows


def make_policy(model: nn.Module, example_input: torch.Tensor, *, density: Mapping[str, float] | float,
                bits: Mapping[str, int] | int, model_spec: Mapping[str, Any] | None = None) -> Policy:
    """A fine-granularity policy giving every conv/linear layer of ``model`` a density (kept fraction
    in (0, 1]) and weight bits (1..8): one number for all layers, or a mapping by layer name in which
    a missing layer keeps every weight (density) or stays float (bits)."""
    layers = LayerGraph.build(model, example_input).layers
    names = {ly.name for ly in layers}
    for what, m in (("density", density), ("bits", bits)):
        unknown = sorted(set(m) - names) if isinstance(m, Mapping) else []
        if unknown:
            raise AmcError(f"{what} names layer(s) {unknown} that the model does not have; its layers: "
                           f"{', '.join(sorted(names))}")
    out = []
    for ly in layers:
        d = density.get(ly.name, 1.0) if isinstance(density, Mapping) else density
        b = bits.get(ly.name) if isinstance(bits, Mapping) else bits
        if not (0.0 < float(d) <= 1.0):
            raise AmcError(f"layer {ly.name!r}: density {d} must be in (0, 1]")
        out.append(LayerDecision(ly.name, ly.kind, None if b is None else int(b), None,
                                 None if float(d) >= 1.0 else 1.0 - float(d)))
    spec = dict(model_spec) if model_spec is not None else {"name": type(model).__name__}
    return Policy(model=spec, mode="joint", granularity="fine", groups=[], layers=out)
