"""Tests of amc.int8: real int8 CPU models and the fp32-vs-int8 latency comparison."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.int8 import INT8_BACKENDS, SUB8_LATENCY_NOTE, compare_latency, int8_backends, int8_model

BACKENDS = int8_backends()
needs_int8 = pytest.mark.skipif(
    not BACKENDS, reason="no int8 CPU backend on this machine (torchao PT2E needs x86; torch.ao FX needs "
                         "an x86/fbgemm/qnnpack quantized engine)")



class PrunedNet(nn.Module):
    """Odd channel counts, as left by channel pruning; conv-BN-ReLU, a residual add and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 13, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(13)
        self.conv2 = nn.Conv2d(13, 13, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(13)
        self.conv3 = nn.Conv2d(13, 21, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(21, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn2(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        return self.fc(torch.flatten(self.pool(x), 1))

    @staticmethod
    def example_inputs(batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _model() -> PrunedNet:
    torch.manual_seed(0)
    m = PrunedNet()
    for mod in m.modules():  # non-trivial BN statistics, as after training
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).sum() / b.pow(2).sum())


@needs_int8
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "pt2e-inductor"])
def test_int8_model_close_to_fp32(backend) -> None:
    m = _model()
    calib = [torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    q = int8_model(m, PrunedNet.example_inputs(), calib, backend=backend)
    assert q.backend == backend
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(10 + batch))
        with torch.no_grad():
            ref = m(x)
        out = q(x)
        assert out.shape == ref.shape
        assert _rel_err(out, ref) < 1e-2
    assert isinstance(m.conv1, nn.Conv2d) and m.training is False  # input model untouched


class LeNetish(nn.Module):
    """conv -> max-pool -> flatten -> linear: torchao's lowered PT2E graph turns the flatten into a
    ``view`` of a channels-last int8 output and fails; ``auto`` must still give a working model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


@needs_int8
def test_auto_falls_back_to_a_backend_that_runs() -> None:
    torch.manual_seed(0)
    m = LeNetish().eval()
    x = torch.randn(4, 1, 16, 16)
    q = int8_model(m, x, [torch.randn(32, 1, 16, 16)])
    assert q.backend in BACKENDS
    with torch.no_grad():
        assert _rel_err(q(x), m(x)) < 1e-2


@needs_int8
@pytest.mark.slow
@pytest.mark.skipif("pt2e-inductor" not in BACKENDS, reason="needs torchao and a C++ compiler for Inductor")
def test_int8_inductor_close_to_fp32() -> None:
    m = _model()
    q = int8_model(m, PrunedNet.example_inputs(), [torch.randn(32, 3, 16, 16)], backend="pt2e-inductor")
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert _rel_err(q(x), m(x)) < 1e-2


@needs_int8
def test_compare_latency_report() -> None:
    r = compare_latency(_model(), (3, 16, 16), batch_sizes=(1, 4), threads=1, warmup=1, repeats=3)
    json.dumps(r)  # JSON-ready
    assert r["backend"] in BACKENDS and r["threads"] == 1 and r["note"] == SUB8_LATENCY_NOTE
    assert [row["batch_size"] for row in r["results"]] == [1, 4]
    for row in r["results"]:
        assert row["fp32_ms"] > 0 and row["int8_ms"] > 0
        assert row["speedup"] == pytest.approx(row["fp32_ms"] / row["int8_ms"])
    assert r["int8_rel_error"] < 1e-2


def test_bad_arguments() -> None:
    with pytest.raises(AmcError, match="valid: " + ", ".join(INT8_BACKENDS)):
        int8_model(_model(), PrunedNet.example_inputs(), backend="tensorrt")
    with pytest.raises(AmcError, match="input_shape"):
        compare_latency(_model(), ())
    with pytest.raises(AmcError, match="batch_sizes"):
        compare_latency(_model(), (3, 16, 16), batch_sizes=(0,))


@needs_int8
def test_cuda_input_rejected() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device to pass a CUDA input from")
    q = int8_model(_model(), PrunedNet.example_inputs(), backend="auto")
    with pytest.raises(AmcError, match="CPU"):
        q(torch.randn(1, 3, 16, 16, device="cuda"))
