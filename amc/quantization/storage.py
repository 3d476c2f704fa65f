"""Honest storage of a quantized model: integer codes bit-packed, so the file is the computed weight
storage plus a small overhead.

:func:`pack_model` turns a quantized model into a *packed payload*: weight codes bit-packed into one
byte stream, fp32 per-channel scales (and k-means centroids), everything else (biases, BN,
activation scales) in fp32 (or fp16), a JSON layout; with ``sparse=True`` (what ``amc.export``
writes) a layer whose zeros make a smaller layout of :mod:`amc.sparse` is stored so. :func:`unpack_model`
turns it back, the stored codes pinned, so the model computes exactly what the packed one did.

There is one model file format: ``amc.export``'s (``format: amc-model``, what ``amc export`` and
``amc apply`` write), which holds the payload of a quantized model under ``packed``.
:func:`save_packed` and :func:`load_packed` write and read that file. Files that ``save_packed``
wrote before (the payload alone, ``format: amc-packed-model``) still load.

:func:`huffman_size_bits` gives what Huffman coding of the codes would reach, as Deep Compression
reports; files hold Huffman-coded codes only when written with ``huffman=True``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from amc._huffman import code_lengths, pack_bits, unpack_bits
from amc.errors import AmcError
from amc.quantization.schemes import FLOAT_BITS, QuantizedWeight
from amc.quantization.wrapper import QuantWrapper, quantizable_layers, quantized_layers
from amc.sparse import decode_codes, encode_codes

PACKED_FORMAT = "amc-packed-model"  # the payload's tag (a whole file before there was one format)
PACKED_VERSION = 1


def weight_storage_bits(qmodel: nn.Module) -> int:
    """Weight storage in bits: sum over Conv2d/Linear weights of ``numel x bits`` (float = 32).

    Biases, BN, scales and codebooks are not counted (they are the small overhead of a packed file).
    """
    return sum(_weight(m).numel() * (getattr(m, "w_bits", None) or FLOAT_BITS)
               for m in quantizable_layers(qmodel).values())


def _weight(layer: nn.Module) -> torch.Tensor:
    """The float weight of a ``Conv2d``/``Linear`` or of the layer a :class:`QuantWrapper` wraps."""
    return layer.module.weight if isinstance(layer, QuantWrapper) else layer.weight


def huffman_size_bits(qmodel: nn.Module) -> int:
    """Bits a per-layer Huffman coding of the integer weight codes would take (Deep Compression,
    section 4), code tables excluded; float layers count 32 bits per weight. Never more than
    :func:`weight_storage_bits` (Huffman is optimal among prefix codes, fixed length is one)."""
    total = 0
    for m in quantizable_layers(qmodel).values():
        if getattr(m, "w_bits", None) is None:
            total += _weight(m).numel() * FLOAT_BITS
        else:
            counts = np.bincount(m.quantized_weight().codes.cpu().numpy().reshape(-1))
            total += int((counts * code_lengths(counts)).sum())
    return total


def skeleton_bytes(qmodel: nn.Module) -> bytes:
    """The architecture: a pickled copy of the model whose persistent tensors are on the meta
    device (no storage), zlib-compressed (about 2 KB for a ResNet-20). Non-persistent buffers keep
    their values: no state dict restores them."""
    sk = copy.deepcopy(qmodel)
    for m in quantized_layers(sk).values():
        m.clear_cache()
        m.observer = None
    persistent = set(sk.state_dict(keep_vars=True))
    for prefix, m in sk.named_modules():
        for k, p in list(m.named_parameters(recurse=False)):
            setattr(m, k, nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad))
        for k, b in list(m.named_buffers(recurse=False)):
            if (f"{prefix}.{k}" if prefix else k) in persistent:
                setattr(m, k, torch.empty_like(b, device="meta"))
    return zlib.compress(pickle.dumps(sk, protocol=pickle.HIGHEST_PROTOCOL), 9)


def read_layout(package: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON layout document of a :func:`pack_model` package."""
    return json.loads(zlib.decompress(package["layout"]).decode())


def write_layout(layout: Mapping[str, Any]) -> bytes:
    """The stored (zlib-compressed JSON) form of a package's layout."""
    try:
        return zlib.compress(json.dumps(layout, separators=(",", ":")).encode(), 9)
    except TypeError as e:
        raise AmcError(f"a module's extra state is not JSON-serialisable, cannot pack it: {e}") from None


def _weight_key(name: str) -> str:
    return f"{name}.module.weight" if name else "module.weight"


def pack_model(
    qmodel: nn.Module, *, float_dtype: torch.dtype = torch.float32, include_architecture: bool = True,
    sparse: bool = False, huffman: bool = False,
) -> dict[str, Any]:
    """The model as an honest storage payload (what a model file holds under ``packed``).

    Quantized weights become one ``uint8`` stream of bit-packed codes (``ceil(numel x bits / 8)``
    bytes per layer); per-channel scales and k-means centroids one fp32 array; the other floating
    state (biases, BN, float layers) one ``float_dtype`` array; integer state one int64 array; the
    layout a zlib-compressed JSON document; and, with ``include_architecture``, the architecture as a
    compressed pickle of a storage-free copy of the model. Few tensors means little overhead.

    With ``sparse``, a layer whose zeros make a smaller layout (:func:`amc.sparse.encode_codes`) is
    stored so; ``huffman`` (with ``sparse``) also Huffman-codes codes and indices where smaller.
    """
    if float_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise AmcError(f"float_dtype must be torch.float32, float16 or bfloat16, got {float_dtype}")
    state = qmodel.state_dict()
    wrappers = quantized_layers(qmodel)
    layers: dict[str, dict[str, Any]] = {}
    code_chunks: list[np.ndarray] = []
    qparams: list[torch.Tensor] = []
    for name, m in wrappers.items():
        if m.w_bits is None:
            continue
        qw = m.quantized_weight()
        encoded = encode_codes(qw, huffman=huffman) if sparse else None
        # bit-packed: (ceil(numel * bits / 8),) uint8
        data = pack_bits(qw.codes.cpu().numpy(), qw.bits) if encoded is None else encoded[1]
        entry: dict[str, Any] = {"bits": qw.bits, "scheme": qw.scheme, "shape": list(qw.codes.shape),
                                 "codes": [sum(c.size for c in code_chunks), int(data.size)]}  # offset, size
        code_chunks.append(data)
        for key in ("scale", "centroids"):
            t = getattr(qw, key)
            if t is not None:
                t = t.detach().float().cpu().reshape(-1)
                entry[key] = [sum(q.numel() for q in qparams), int(t.numel())]
                qparams.append(t)
        if encoded is not None:
            entry["sparse"] = encoded[0]
        layers[name] = entry
    skip = {_weight_key(n) for n in layers}
    sections: dict[str, list[torch.Tensor]] = {"float": [], "int": []}
    index: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    for key, v in state.items():
        if key in skip:
            continue
        if not isinstance(v, torch.Tensor):
            extra[key] = v
            continue
        if v.is_floating_point():
            sec, flat = "float", v.detach().cpu().to(float_dtype).reshape(-1)
        elif v.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
            sec, flat = "int", v.detach().cpu().to(torch.int64).reshape(-1)
        else:
            raise AmcError(f"cannot pack state {key!r} of dtype {v.dtype}")
        index.append({"key": key, "section": sec, "dtype": str(v.dtype).replace("torch.", ""),
                      "shape": list(v.shape), "offset": sum(t.numel() for t in sections[sec])})
        sections[sec].append(flat)
    layout = {"layers": layers, "wrappers": list(wrappers), "index": index, "extra_state": extra,
              "training": bool(qmodel.training)}
    return {
        "format": PACKED_FORMAT,
        "version": PACKED_VERSION,
        "layout": write_layout(layout),
        "architecture": skeleton_bytes(qmodel) if include_architecture else None,
        "codes": torch.from_numpy(np.concatenate([np.zeros(0, np.uint8), *code_chunks])),
        "qparams": torch.cat(qparams) if qparams else torch.zeros(0),
        "float": torch.cat(sections["float"]) if sections["float"] else torch.zeros(0, dtype=float_dtype),
        "int": torch.cat(sections["int"]) if sections["int"] else torch.zeros(0, dtype=torch.int64),
        "weight_storage_bits": weight_storage_bits(qmodel),
        "huffman_size_bits": huffman_size_bits(qmodel),
    }


def unpack_model(
    package: Mapping[str, Any], *, model: nn.Module | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the model of :func:`pack_model`, the stored codes pinned as its quantized weights, so
    that it computes exactly what the packed model computed.

    Args:
        model: a model of the same architecture (float or quantized; copied, not modified) to fill
            instead of unpickling the stored architecture. Needed when the package has none.
    """
    if not isinstance(package, Mapping) or package.get("format") != PACKED_FORMAT:
        raise AmcError("not an amc packed model; write one with amc.quantization.save_packed or `amc export`")
    if int(package.get("version", -1)) > PACKED_VERSION:
        raise AmcError(f"packed model version {package['version']} is newer than this amc reads "
                       f"({PACKED_VERSION}); upgrade amc")
    layout = read_layout(package)
    if model is not None:
        target = copy.deepcopy(model)
        for name in layout["wrappers"]:
            try:
                mod = target.get_submodule(name)
            except AttributeError:
                raise AmcError(f"the given model has no layer {name!r}; pass the architecture the package "
                               "was made from") from None
            inner = mod.module if isinstance(mod, QuantWrapper) else mod
            target.set_submodule(name, QuantWrapper(inner, name=name).train(inner.training))
    elif package.get("architecture") is not None:
        target = pickle.loads(zlib.decompress(package["architecture"]))
    else:
        raise AmcError("this package holds no architecture; pass model=<a model of the same architecture>")
    state: dict[str, Any] = dict(layout["extra_state"])
    for e in layout["index"]:
        n = math.prod(e["shape"])
        t = package[e["section"]][e["offset"]: e["offset"] + n]  # the "float" or "int" section
        state[e["key"]] = t.to(getattr(torch, e["dtype"])).reshape(e["shape"])
    codes_all = package["codes"].numpy()
    qparams = package["qparams"]
    qws: dict[str, QuantizedWeight] = {}
    for name, e in layout["layers"].items():
        off, nbytes = e["codes"]
        data = codes_all[off: off + nbytes]  # bit-packed, or in a layout of amc.export's sparse layers
        numel = math.prod(e["shape"])
        flat = decode_codes(e["sparse"], data) if "sparse" in e else unpack_bits(data, e["bits"], numel)
        codes = torch.from_numpy(flat).reshape(e["shape"])
        qp = {k: qparams[e[k][0]: e[k][0] + e[k][1]].clone() for k in ("scale", "centroids") if k in e}
        qw = qws[name] = QuantizedWeight(codes, qp.get("scale"), e["bits"], e["scheme"], qp.get("centroids"))
        state[_weight_key(name)] = qw.dequantize(torch.float32)
    try:
        target.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise AmcError(f"the packed state does not fit the model: {e}") from None
    target.to(device).train(bool(layout.get("training", False)))
    for name, qw in qws.items():
        target.get_submodule(name).pin_quantized_weight(qw)
    return target


def save_packed(qmodel: nn.Module, path: str | os.PathLike) -> int:
    """Write ``qmodel`` (atomically) as an amc model file, the one format ``amc export`` writes
    (:func:`amc.export.export`; quantized weights packed by :func:`pack_model`); return its size in
    bytes. The file holds the pickled, storage-free architecture: :func:`amc.export.export` with a
    model spec and policy writes a file that rebuilds the model without unpickling."""
    from amc.export import export

    export(qmodel, path, verify=False)
    return os.path.getsize(path)


def load_packed(
    path: str | os.PathLike, *, model: nn.Module | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a quantized model file (:func:`save_packed`, ``amc export``), in eval mode.

    Without ``model`` this is :func:`amc.export.load`: a file that holds a pickled architecture runs
    code when loaded, so load only files you trust. With ``model`` (the same architecture, e.g.
    ``build_model(spec)``, float or quantized; copied) nothing is unpickled: its layers are filled
    with the stored codes and tensors. Files of the earlier stand-alone packed format load too.
    """
    from amc.export import EXPORT_FORMAT, load

    if not os.path.exists(path):
        raise AmcError(f"packed model {str(path)!r} not found")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise AmcError(f"cannot read packed model {str(path)!r} ({type(e).__name__}: {e}); "
                       "write one with save_packed") from None
    if isinstance(doc, Mapping) and doc.get("format") == EXPORT_FORMAT:
        if model is None:
            return load(path, device=device)
        if doc.get("packed") is None:
            raise AmcError(f"{str(path)!r} holds a float model, not a quantized one: load it with "
                           "amc.export.load")
        doc = doc["packed"]
    return unpack_model(doc, model=model, device=device).eval()  # or a file of the earlier stand-alone format
