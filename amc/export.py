"""Ship a compressed model as ONE file that :func:`load` turns back into a working ``nn.Module``.

The file (``torch.save`` of a plain dict, readable with ``torch.load(weights_only=True)``)::

    {"format": "amc-model", "version": 1,
     "model_spec": {...} | None,     # amc.models.ModelSpec.to_dict() of the *uncompressed* model
     "policy": {...} | None,         # amc.policy.Policy.to_dict(): kept channels per group, bits per layer
     "metrics": {...},               # e.g. {"val_top1": ..., "test_top1": ..., "macs_ratio": ...}
     "quantized": bool,
     "state_dict": {...},            # float models: every tensor of the (pruned) model
     "packed": {...},                # quantized models: amc.quantization.pack_model() (bit-packed
                                     # integer codes + fp32 scales), so the file size is honest;
                                     # sparse layers in amc.sparse's layouts (version 2)
     "sparse": {...} | None,         # float models: sparse conv/linear weights (amc.sparse; version 2)
     "architecture": bytes | None,   # only when spec + policy cannot rebuild the structure
     "amc_version": "...", "created": "..."}

How the structure comes back: the pruned architecture is *not* pickled. :func:`build_structure`
builds ``build_model(model_spec)`` freshly and prunes it with :func:`amc.compress.apply_policy` to
the stored channel counts (no calibration, no reconstruction: the weights are stored), then the
stored weights are loaded strictly (float) or unpacked into it (quantized:
:func:`amc.quantization.unpack_model` wraps the quantized layers and pins the stored codes). Only
for a model with no rebuildable spec (e.g. an arbitrary ``nn.Module``) does the file hold a pickled,
storage-free copy of the architecture; such a file runs code when loaded: load it only from a source
you trust (``load(..., allow_pickle=False)`` refuses it).

:func:`export` checks before writing that the file rebuilds a model with exactly the outputs of the
given one on an example input, and falls back to the pickled architecture when it would not.

Fine-grained sparse layers (zeros in a weight) are stored as :mod:`amc.sparse` says: nonzero values
with relative indices or a bitmask, whichever is smallest per layer, optionally Huffman-coded
(``export(..., huffman=True)``, Deep Compression's last stage). Such files have ``version`` 2; files
without sparse layers stay version 1.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import pickle
import time
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from amc import __version__
from amc.errors import AmcError
from amc.policy import Policy
from amc.quantization import fake_quant_activation, pack_model, quantized_layers, skeleton_bytes, unpack_model
from amc.quantization.storage import read_layout
from amc.sparse import densify_state, sparsify_state
from amc.utils import atomic_torch_save, resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "build_structure",
    "export",
    "export_onnx",
    "export_torchscript",
    "load",
    "load_with_metadata",
    "read_metadata",
]

EXPORT_FORMAT = "amc-model"
EXPORT_VERSION = 2
#: the version written for files that use no version-2 feature (sparse storage)
_DENSE_VERSION = 1


# --------------------------------------------------------------------------------------------------
# structure


def _structural_policy(policy: Policy) -> Policy:
    """The part of ``policy`` that fixes the architecture: channel counts only (no proxy, so no
    reconstruction; no sparsity, no bits: weights and codes come from the file)."""
    d = policy.to_dict()
    d["scoring"] = {**d["scoring"], "proxy": "vanilla"}
    for ly in d["layers"]:
        ly["w_bits"] = ly["a_bits"] = ly["sparsity"] = None
    return Policy.from_dict(d)


def build_structure(model_spec: Mapping[str, Any] | Any, policy: Policy | None = None) -> nn.Module:
    """A freshly built model of ``model_spec`` with the channel counts of ``policy`` (random weights,
    eval mode). The global RNG state is left untouched.

    The channels are removed by :func:`amc.compress.apply_policy` (the one code path that builds
    compressed models) on a new model; which channels go does not matter since the caller loads
    the real weights afterwards.
    """
    from amc.compress import apply_policy
    from amc.models import build_model, example_input, resolve_spec

    spec = resolve_spec(model_spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(spec).eval()
    if policy is not None and policy.granularity == "channel" and any(g.channels < g.total for g in policy.groups):
        model = apply_policy(model, _structural_policy(policy), example_input=example_input(spec)).eval()
    return model


# --------------------------------------------------------------------------------------------------
# writing


def _plain_copy(model: nn.Module) -> nn.Module:
    """A CPU eval copy with ``torch.nn.utils.prune`` re-parametrisations made permanent."""
    from torch.nn.utils import prune as tprune

    m = copy.deepcopy(model).cpu().eval()
    for mod in m.modules():
        for name in [k[: -len("_orig")] for k in list(mod._parameters) if k.endswith("_orig")]:
            if hasattr(mod, f"{name}_mask"):
                tprune.remove(mod, name)
    return m


def _spec_dict(model_spec: Any, policy: Policy | None) -> dict[str, Any] | None:
    from amc.models import resolve_spec

    from_policy = policy.model if policy is not None else None
    if isinstance(from_policy, Mapping) and not {"num_classes", "in_channels", "image_size"} <= set(from_policy):
        from_policy = None  # only a name (e.g. the class name): not enough to rebuild the model
    for cand in (model_spec, from_policy):
        if cand is None:
            continue
        try:
            return resolve_spec(cand).to_dict()
        except (ValueError, TypeError):  # e.g. a policy that only records the class name
            if cand is model_spec:
                raise AmcError(f"model_spec {model_spec!r} is not a valid model spec") from None
    return None


def _payload(model: nn.Module, quantized: bool, *, architecture: bool, huffman: bool = False) -> dict[str, Any]:
    if quantized:
        package = pack_model(model, include_architecture=architecture, sparse=True, huffman=huffman)
        sparse = any("sparse" in e for e in read_layout(package)["layers"].values())
        return {"packed": package, "state_dict": None, "architecture": None, "sparse": None,
                "version": EXPORT_VERSION if sparse else _DENSE_VERSION}
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state, sparse = sparsify_state(model, state)
    arch = skeleton_bytes(model) if architecture else None
    return {"packed": None, "state_dict": state, "architecture": arch,
            "sparse": sparse, "version": EXPORT_VERSION if sparse is not None else _DENSE_VERSION}


def _outputs_equal(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    return isinstance(ya, torch.Tensor) and ya.shape == yb.shape and torch.equal(ya, yb)


def export(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    policy: Policy | None = None,
    model_spec: Mapping[str, Any] | Any | None = None,
    metrics: Mapping[str, Any] | None = None,
    verify: bool = True,
    huffman: bool = False,
) -> Path:
    """Write ``model`` (float, pruned and/or quantized) to ``path`` as one file; return the path.

    Args:
        model: the compressed model (not modified; a CPU copy is written).
        policy: the policy that gives the model's channel counts (needed to rebuild a pruned model
            without pickling it); also stored for the record.
        model_spec: the *uncompressed* model's spec (:class:`amc.models.ModelSpec` or its dict);
            defaults to ``policy.model`` when that is a valid spec.
        metrics: plain numbers to store (accuracies in percent, cost ratios ...).
        verify: rebuild the model from what would be written and compare outputs on an example
            input; on a mismatch the architecture is pickled into the file instead.
        huffman: Huffman-code the integer codes and sparse indices of quantized layers where that is
            smaller (Deep Compression, section 4); decoding on load is slower.
    """
    from amc.models import example_input

    if not isinstance(model, nn.Module):
        raise AmcError(f"export needs an nn.Module, got {type(model).__name__}")
    if policy is not None and not isinstance(policy, Policy):
        raise AmcError(f"policy must be an amc.policy.Policy, got {type(policy).__name__}")
    m = _plain_copy(model)
    quantized = bool(quantized_layers(m))
    spec = _spec_dict(model_spec, policy)
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model_spec": spec,
        "policy": policy.to_dict() if policy is not None else None,
        "metrics": {str(k): v for k, v in (metrics or {}).items()},
        "quantized": quantized,
        "amc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    pickle_arch = spec is None
    if not pickle_arch:
        doc.update(_payload(m, quantized, architecture=False, huffman=huffman))
        try:
            rebuilt = _materialize(doc, device="cpu", allow_pickle=False)
            ok = not verify or _outputs_equal(m, rebuilt, example_input(spec, batch=2))
            reason = "the rebuilt model's outputs differ"
        except (AmcError, RuntimeError, ValueError, KeyError) as e:
            ok, reason = False, str(e)
        if not ok:
            log.warning("the model cannot be rebuilt from its spec and policy (%s); the file stores its pickled "
                        "architecture instead", reason[:300])
            pickle_arch = True
    if pickle_arch:
        doc.update(_payload(m, quantized, architecture=True, huffman=huffman))
    path = Path(path)
    atomic_torch_save(doc, path)
    log.info("exported %s model to %s (%d bytes)", "quantized" if quantized else "float", path, path.stat().st_size)
    return path


# --------------------------------------------------------------------------------------------------
# reading


def _read(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AmcError(f"model file {str(path)!r} does not exist (write one with `amc export` or amc.export.export)")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise AmcError(f"cannot read model file {str(path)!r} (corrupt or not an amc model: "
                       f"{type(e).__name__}: {str(e)[:200]})") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt != EXPORT_FORMAT:
        hint = (" (it is a training checkpoint: use amc.training.load_checkpoint or `amc eval --checkpoint`)"
                if fmt == "amc-checkpoint" else "")
        raise AmcError(f"{str(path)!r} is not an exported amc model (no format={EXPORT_FORMAT!r}){hint}")
    if int(doc.get("version", 0)) > EXPORT_VERSION:
        raise AmcError(f"{str(path)!r} has export version {doc['version']}, newer than this amc reads "
                       f"({EXPORT_VERSION}); upgrade amc")
    return doc


def _materialize(doc: Mapping[str, Any], *, device: str | torch.device, allow_pickle: bool) -> nn.Module:
    policy = Policy.from_dict(doc["policy"]) if doc.get("policy") is not None else None
    arch = doc.get("architecture")
    packed = doc.get("packed")
    needs_pickle = arch is not None or (packed is not None and packed.get("architecture") is not None)
    if needs_pickle and not allow_pickle:
        raise AmcError("this model file stores a pickled architecture (its model could not be rebuilt from a "
                       "spec); loading it runs code from the file: pass allow_pickle=True for files you trust")
    if doc.get("quantized"):
        if packed is None:
            raise AmcError("the model file is marked quantized but holds no packed weights")
        base = None if packed.get("architecture") is not None else build_structure(doc["model_spec"], policy)
        model = unpack_model(packed, model=base, device="cpu")
    else:
        state = doc.get("state_dict")
        if state is None:
            raise AmcError("the model file holds no weights (state_dict)")
        state = densify_state(state, doc.get("sparse"))
        if arch is not None:
            model = pickle.loads(zlib.decompress(arch))
        elif doc.get("model_spec"):
            model = build_structure(doc["model_spec"], policy)
        else:
            raise AmcError("the model file has neither a model spec nor an architecture")
        try:
            model.load_state_dict(state, strict=True, assign=arch is not None)
        except RuntimeError as e:
            raise AmcError(f"the stored weights do not fit the rebuilt model: {str(e).splitlines()[0][:300]}") from None
    return model.to(device).eval()


def _metadata(doc: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    weights = ("state_dict", "packed", "architecture", "sparse")
    return {**{k: v for k, v in doc.items() if k not in weights}, "file_bytes": Path(path).stat().st_size}


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Everything in a model file except the weights: format, version, model_spec, policy (dict),
    metrics, quantized, amc_version, created, plus ``file_bytes``."""
    return _metadata(_read(path), path)


def load_with_metadata(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                       allow_pickle: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, read_metadata(path))``; see :func:`load`."""
    doc = _read(path)
    return _materialize(doc, device=resolve_device(device), allow_pickle=allow_pickle), _metadata(doc, path)


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu", allow_pickle: bool = True) -> nn.Module:
    """Load a model written by :func:`export` (eval mode, on ``device``); also ``amc.load``.

    No search run directory, dataset or calibration is needed. ``allow_pickle=False`` refuses files
    that carry a pickled architecture (written for models without a rebuildable spec).
    """
    return load_with_metadata(path, device=device, allow_pickle=allow_pickle)[0]


# --------------------------------------------------------------------------------------------------
# other formats


class _FrozenQuantLayer(nn.Module):
    """A quantized layer frozen for graph export: its weight holds the dequantized integer codes and
    its input is fake-quantized with the calibrated scale (no Python control flow on tensors)."""

    def __init__(self, wrapper: nn.Module) -> None:
        super().__init__()
        layer = copy.deepcopy(wrapper.module)
        with torch.no_grad():
            qw = wrapper.quantized_weight()
            if qw is not None:
                layer.weight.copy_(qw.dequantize(layer.weight.dtype))
        self.layer = layer
        self.a_bits = wrapper.a_bits
        self.act_scale = wrapper.act_scale
        self.act_signed = wrapper.act_signed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(fake_quant_activation(x, self.a_bits, self.act_scale, self.act_signed))


def _frozen(model: nn.Module) -> nn.Module:
    """A plain copy for tracing: quantization wrappers become :class:`_FrozenQuantLayer`."""
    m = _plain_copy(model)
    for name, w in quantized_layers(m).items():
        m.set_submodule(name, _FrozenQuantLayer(w))
    return m.eval()


def export_torchscript(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor) -> Path:
    """Trace ``model`` (eval mode, CPU) on ``example_input`` and save it as TorchScript; the traced
    module is checked to reproduce the model's outputs. Quantized layers are traced with their
    fake-quantization (float tensors holding the quantized values)."""
    m = _frozen(model)
    x = example_input.detach().cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        try:
            traced = torch.jit.trace(m, x, check_trace=False)
        except Exception as e:  # noqa: BLE001 - tracing fails in many ways; say which
            raise AmcError(f"TorchScript tracing failed: {type(e).__name__}: {str(e)[:300]}") from None
        if not torch.allclose(traced(x), m(x), rtol=1e-5, atol=1e-6):
            raise AmcError("the traced TorchScript module does not reproduce the model's outputs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def onnx_available() -> bool:
    """Whether the optional ``export`` extra (``onnx``, ``onnxscript``) is installed."""
    return all(importlib.util.find_spec(n) is not None for n in ("onnx", "onnxscript"))


def export_onnx(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor, *,
                opset: int | None = None) -> Path:
    """Export ``model`` (eval mode, CPU) to ONNX with a dynamic batch dimension.

    Needs the optional extra: ``pip install "amc[export]"`` (onnx, onnxscript); raises
    :class:`AmcError` saying so when it is missing.
    """
    if not onnx_available():
        raise AmcError('ONNX export needs the optional packages onnx and onnxscript: pip install "amc[export]"')
    m = _frozen(model)
    x = example_input.detach().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad():
            torch.onnx.export(m, (x,), str(path), input_names=["input"], output_names=["logits"],
                              verbose=False, dynamic_shapes=({0: torch.export.Dim("batch")},),
                              opset_version=None if opset is None else int(opset))
    except Exception as e:  # noqa: BLE001
        raise AmcError(f"ONNX export failed: {type(e).__name__}: {str(e)[:300]}") from None
    return path
