"""Real int8 execution on CPU, to measure what 8-bit quantization buys in latency.

Which int8 path, and why (checked on torch 2.14.1, x86-64 with AVX-512 VNNI/AMX):

- ``pt2e`` (default): PyTorch 2 Export quantization from the **torchao** package (torchao 0.18,
  ``pip install torchao``: a pure-Python wheel that works with the installed torch; torch 2.14 no
  longer ships ``torch.ao.quantization.quantize_pt2e`` or its quantizers, they moved to torchao).
  ``torch.export`` -> ``prepare_pt2e`` with ``X86InductorQuantizer`` (static, per-channel
  symmetric int8 weights, uint8 activations, conv-BN folded) -> calibration -> ``convert_pt2e`` ->
  ``lower_pt2e_quantized_to_x86``, which turns the quantize/dequantize pattern into oneDNN
  ``qconv``/``qlinear`` int8 kernels. No C++ compiler and under a second per input shape; the
  lowered graph is specialised to one input shape, so one is built per batch size and cached.
  This is the path PyTorch and torchao maintain.
- ``pt2e-inductor``: the same quantized graph compiled by ``torch.compile`` with Inductor
  freezing (fused int8 kernels; needs a C++ compiler, seconds to tens of seconds per shape). Often
  the fastest, at a compile cost.
- ``fx``: the older ``torch.ao.quantization.quantize_fx`` (``prepare_fx``/``convert_fx`` with the
  ``x86`` qconfig, fbgemm/oneDNN kernels; ``qnnpack`` on ARM). Deprecated by PyTorch ("will be
  removed") but still present in 2.14.1 and dependency-free: the fallback when torchao is absent.

``auto`` tries ``pt2e`` (x86 with torchao), then ``fx``, then ``pt2e-inductor``, keeping the first
that builds and runs the model (the lowered PT2E graph fails on some models, e.g. LeNet-5, whose
``flatten`` becomes a ``view`` of the channels-last int8 conv output); it raises :class:`AmcError`
when none does. The quantized kernels run on CPU only: a CUDA model is copied to CPU (with a
warning).

Only 8-bit choices can be *measured*: no CPU here (nor PyTorch) has 1-7 bit conv kernels, so the
latency of a sub-8-bit policy can only come from a model or a table (BitOps, a HAQ-style hardware
simulator, or measurements on hardware that has such kernels), never from a timing on this machine.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import platform
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.latency import fixed_threads, measure_latency
from amc.quantization.quantize import iter_batches
from amc.quantization.schemes import check_choice

__all__ = ["INT8_BACKENDS", "Int8Model", "compare_latency", "int8_backends", "int8_model"]

logger = logging.getLogger(__name__)

INT8_BACKENDS = ("auto", "pt2e", "pt2e-inductor", "fx")
_AUTO_ORDER = ("pt2e", "fx", "pt2e-inductor")  # fastest to build first; compiling is the last resort
SUB8_LATENCY_NOTE = ("int8 is the only width measurable here: sub-8-bit latency can only come from a model or "
                     "a table (e.g. BitOps or a hardware simulator), not from a timing on this CPU")


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _has_cxx() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:  # noqa: BLE001 - any failure means "no usable compiler"
        return False


def _fx_engine() -> str | None:
    engines = torch.backends.quantized.supported_engines
    return next((e for e in (("x86", "fbgemm") if _is_x86() else ("qnnpack",)) if e in engines), None)


def int8_backends() -> list[str]:
    """The int8 backends usable on this machine, best first."""
    out = []
    if _is_x86() and importlib.util.find_spec("torchao") is not None:
        out.append("pt2e")
        if _has_cxx():
            out.append("pt2e-inductor")
    if _fx_engine() is not None and importlib.util.find_spec("torch.ao.quantization.quantize_fx") is not None:
        out.append("fx")
    return out


def _backend_order(backend: str) -> list[str]:
    """The backends ``int8_model`` tries, in order, for ``backend``."""
    b = check_choice("int8 backend", backend, INT8_BACKENDS)
    avail = int8_backends()
    if b == "auto":
        if not avail:
            raise AmcError("no int8 CPU backend here: torchao's PT2E needs an x86 CPU, and torch.ao's FX "
                           f"path needs a quantized engine (this torch has {torch.backends.quantized.supported_engines}"
                           f" on {platform.machine()}); install torchao on x86, or skip int8 latency")
        return [c for c in _AUTO_ORDER if c in avail]
    if b not in avail:
        why = {"pt2e": "needs an x86 CPU and the torchao package (pip install torchao)",
               "pt2e-inductor": "needs an x86 CPU, torchao and a C++ compiler for torch.compile",
               "fx": "needs torch.ao.quantization.quantize_fx and an x86/fbgemm/qnnpack engine"}[b]
        raise AmcError(f"int8 backend {b!r} is not available here: it {why}; available: {avail or 'none'}")
    return [b]


class Int8Model(nn.Module):
    """A really int8 model (CPU). Call it like the float model, on CPU tensors; runs without grad.

    Attributes:
        backend: ``pt2e``, ``pt2e-inductor`` or ``fx``.
        graph: the quantized ``GraphModule`` (PT2E: the converted reference graph, shape-generic).
    """

    def __init__(self, graph: nn.Module, backend: str) -> None:
        super().__init__()
        self.training = False
        self.graph = graph
        self.backend = backend
        # per-shape lowered graphs / the compiled callable: not submodules (they share the state)
        self.__dict__["_lowered"] = {}
        self.__dict__["_compiled"] = None

    def train(self, mode: bool = True) -> Int8Model:
        """Int8 models are inference-only: ``eval()`` is a no-op, ``train()`` an error (exported
        graphs do not support switching modes)."""
        if mode:
            raise AmcError("an int8 model is inference-only; fine-tune the float (or fake-quantized) model instead")
        self.training = False
        return self

    def _runner(self, x: torch.Tensor) -> Any:
        if self.backend == "fx":
            return self.graph
        if self.backend == "pt2e-inductor":
            if self._compiled is None:
                self.__dict__["_compiled"] = torch.compile(self.graph, dynamic=False)
            return self._compiled
        key = tuple(x.shape)
        if key not in self._lowered:
            from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86

            t0 = time.perf_counter()
            self._lowered[key] = lower_pt2e_quantized_to_x86(self.graph, (x,))
            logger.debug("lowered int8 graph for input %s in %.2f s", key, time.perf_counter() - t0)
        return self._lowered[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise AmcError(f"the int8 model runs on CPU; got an input on {x.device}: pass x.cpu()")
        with torch.no_grad():
            run = self._runner(x)
            if self.backend == "pt2e-inductor":
                import torch._inductor.config as inductor_config

                # freezing lets Inductor fold the weights and pick its int8 conv/linear kernels
                with inductor_config.patch(freezing=True):
                    return run(x)
            return run(x)


def _build_pt2e(model: nn.Module, example: torch.Tensor, batches: list[torch.Tensor]) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    # torch.export specialises size-1 dimensions: trace with a batch of 2 to keep the batch dynamic
    ex = example.repeat(2, *([1] * (example.dim() - 1))) if example.shape[0] == 1 else example
    try:
        exported = torch.export.export(model, (ex,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    except Exception as e:  # noqa: BLE001 - export errors come in many types
        raise AmcError(f"torch.export could not capture the model for int8 ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); try backend='fx'") from None
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for x in batches:
            prepared(x.cpu())
    return convert_pt2e(prepared)


def _build_fx(model: nn.Module, example: torch.Tensor, batches: list[torch.Tensor]) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = _fx_engine()
    if torch.backends.quantized.engine != engine:
        logger.info("int8 fx: switching torch.backends.quantized.engine %s -> %s",
                    torch.backends.quantized.engine, engine)
        torch.backends.quantized.engine = engine
    with warnings.catch_warnings():  # torch.ao warns that it is deprecated on every call: chosen knowingly
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        try:
            prepared = prepare_fx(model, get_default_qconfig_mapping(engine), (example,))
        except Exception as e:  # noqa: BLE001 - symbolic tracing errors come in many types
            raise AmcError(f"torch.fx could not trace the model for int8 ({type(e).__name__}); "
                           "try backend='pt2e' (torch.export)") from None
        with torch.no_grad():
            for x in batches:
                prepared(x.cpu())
        return convert_fx(prepared)


def int8_model(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    calibration: Any = None,
    *,
    backend: str = "auto",
) -> Int8Model:
    """A real int8 (static, per-channel weights) CPU copy of a float ``model``, e.g. a pruned one.

    Args:
        model: float model (not modified; copied to CPU in eval mode).
        example_inputs: one input batch (or a 1-tuple holding it) for tracing.
        calibration: activation-range calibration batches: a tensor, or an iterable of tensors or
            ``(x, y)`` pairs; ``None`` uses ``example_inputs`` (poor ranges: pass real data).
        backend: ``auto`` | ``pt2e`` | ``pt2e-inductor`` | ``fx`` (see the module docstring).
    Raises :class:`AmcError` when no int8 backend exists here or none can run the model.
    """
    order = _backend_order(backend)
    if isinstance(example_inputs, (tuple, list)) and len(example_inputs) == 1:
        example_inputs = example_inputs[0]
    if not isinstance(example_inputs, torch.Tensor):
        raise AmcError("int8_model supports single-input models: example_inputs must be one tensor batch "
                       f"(or a 1-tuple holding it), got {type(example_inputs).__name__}")
    if any(p.device.type != "cpu" for p in model.parameters()):
        warnings.warn("int8 kernels run on CPU: timing a CPU copy of the model", stacklevel=2)
    float_model = copy.deepcopy(model).cpu().eval()
    example = example_inputs.detach().cpu()
    if calibration is None:
        logger.warning("int8_model: no calibration data, activation ranges come from the example input only")
    batches = [example] if calibration is None else list(iter_batches(calibration))
    if not batches:
        raise AmcError("the calibration data yielded no batch")
    failures = []
    for i, cand in enumerate(order):
        try:
            graph = (_build_fx if cand == "fx" else _build_pt2e)(float_model, example, batches)
            qmodel = Int8Model(graph, cand)
            qmodel(example)  # builds the kernels for this shape, and proves the graph runs
            return qmodel
        except Exception as e:  # noqa: BLE001 - export/lowering failures come in many types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            failures.append(f"{cand}: {type(e).__name__}: {msg}")
            if i + 1 < len(order):
                logger.warning("int8 backend %s cannot run this model (%s); trying %s", cand, failures[-1],
                               order[i + 1])
    hint = "" if len(order) > 1 else f"; available backends: {', '.join(int8_backends())}"
    raise AmcError("no int8 backend could run this model (" + "; ".join(failures) + ")" + hint)


def compare_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = 1,
    warmup: int = 10,
    repeats: int = 50,
    backend: str = "auto",
    calibration: Any = None,
    fp32_compiled: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Median CPU latency of ``model`` in fp32 (eager) and real int8, per batch size.

    Args:
        input_shape: one sample's shape, without the batch dimension (e.g. ``(3, 32, 32)``).
        threads: torch intra-op threads during the timing (restored after); 1 by default, which is
            reproducible and not disturbed by other processes on a small shared machine. ``None``
            leaves the current setting.
        warmup / repeats: untimed calls, then timed calls whose median is reported (ms), by
            :func:`amc.latency.measure_latency` (the project's one timing protocol).
        calibration: batches for the int8 activation ranges; random normal batches by default (the
            latency does not depend on the values; the reported error then means little).
        fp32_compiled: also time the float model compiled by ``torch.compile`` (``fp32_compiled_ms``;
            None where compiling fails), a fairer fp32 baseline for the compiled int8 backends.
    Returns a JSON-ready dict: ``backend``, ``threads``, ``cpu``, ``load_avg_1m`` (the machine's load
    at the end: on a shared machine, compare only timings taken at similar load), ``torch``, ``results`` (one dict per
    batch size: ``batch_size``, ``fp32_ms``, ``int8_ms``, ``speedup``), ``int8_rel_error`` (relative
    squared output error vs fp32 on a random batch) and ``note`` (sub-8-bit latency is not measurable).
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise AmcError(f"input_shape must be one sample's shape, e.g. (3, 32, 32); got {tuple(input_shape)}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise AmcError(f"batch_sizes must be positive ints, got {batch_sizes}")
    g = torch.Generator().manual_seed(seed)
    if calibration is None:
        calibration = [torch.randn(16, *shape, generator=g) for _ in range(4)]
    float_model = copy.deepcopy(model).cpu().eval()

    def measure(m: nn.Module, bs: int) -> float:
        with fixed_threads(threads), torch.no_grad():
            m(torch.randn(bs, *shape))  # untimed: builds the int8 graph for this shape
        return measure_latency(m, shape, batch_size=bs, threads=threads, warmup=warmup, repeats=repeats,
                               device="cpu").median_ms

    with fixed_threads(threads):
        qmodel = int8_model(float_model, torch.randn(2, *shape, generator=g), calibration, backend=backend)
        results = []
        for bs in (int(b) for b in batch_sizes):
            fp, i8 = measure(float_model, bs), measure(qmodel, bs)
            row = {"batch_size": bs, "fp32_ms": fp, "int8_ms": i8, "speedup": fp / i8}
            if fp32_compiled:
                try:
                    compiled = torch.compile(copy.deepcopy(float_model), dynamic=False)
                    row["fp32_compiled_ms"] = measure(compiled, bs)
                except Exception as e:  # noqa: BLE001 - a missing compiler or an unsupported op: no baseline
                    logger.warning("torch.compile of the fp32 model failed (%s): no compiled fp32 baseline",
                                   type(e).__name__)
                    row["fp32_compiled_ms"] = None
            results.append(row)
            logger.info("batch %d: fp32 %.3f ms, int8 %.3f ms (x%.2f)", bs, fp, i8, fp / i8)
        used_threads = torch.get_num_threads()
        xe = torch.randn(int(batch_sizes[-1]), *shape, generator=g)  # a shape already built
        with torch.no_grad():
            ref, out = float_model(xe), qmodel(xe)
        rel = float((out - ref).pow(2).sum() / ref.pow(2).sum().clamp(min=1e-30))
    return {
        "backend": qmodel.backend,
        "threads": used_threads,
        "warmup": warmup,
        "repeats": repeats,
        "cpu": platform.processor() or platform.machine(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # others' load skews timings
        "torch": torch.__version__,
        "results": results,
        "int8_rel_error": rel,
        "note": SUB8_LATENCY_NOTE,
    }
