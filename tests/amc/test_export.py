"""Export: one file that ``amc.load`` turns back into the same model (float, pruned, sparse, quantized),
its errors, TorchScript/ONNX, and ``amc export``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import amc
from amc.cli import main
from amc.compress import apply_policy
from amc.errors import AmcError
from amc.export import (
    build_structure,
    export,
    export_onnx,
    export_torchscript,
    load,
    load_with_metadata,
    read_metadata,
)
from amc.graph import LayerGraph
from amc.models import ModelSpec, build_model, example_input
from amc.policy import GroupDecision, LayerDecision, Policy
from amc.training import save_checkpoint

SPEC = ModelSpec("lenet5", num_classes=10, in_channels=1, image_size=(8, 8))
RSPEC = ModelSpec("resnet20", num_classes=10, in_channels=1, image_size=(8, 8))


def _policy(spec: ModelSpec, model: nn.Module, keep: float = 0.5, *, w_bits: int | None = None,
            a_bits: int | None = None, sparsity: float | None = None) -> Policy:
    graph = LayerGraph.build(model, example_input(spec))
    groups = [GroupDecision(g.layers, max(1, int(g.channels * keep)) / g.channels, max(1, int(g.channels * keep)),
                            g.channels) for g in graph.groups]
    layers = [LayerDecision(ly.name, ly.kind, w_bits, a_bits, sparsity) for ly in graph.layers]
    return Policy(model=spec.to_dict(), groups=groups, layers=layers,
                  granularity="fine" if sparsity else "channel", mode="joint" if w_bits else "prune")


def _trained_ish(spec: ModelSpec) -> nn.Module:
    torch.manual_seed(1)
    m = build_model(spec).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_float_model_round_trip(tmp_path, x):
    model = _trained_ish(SPEC)
    path = export(model, tmp_path / "m.amc", model_spec=SPEC, metrics={"test_top1": 91.5})
    loaded = amc.load(path)
    _same(model, loaded, x)
    meta = read_metadata(path)
    assert meta["format"] == "amc-model" and meta["version"] == 1 and meta["quantized"] is False
    assert meta["model_spec"] == SPEC.to_dict() and meta["metrics"] == {"test_top1": 91.5}
    assert meta["file_bytes"] == path.stat().st_size
    assert not torch.is_grad_enabled() or loaded.training is False


@pytest.mark.parametrize("spec", [SPEC, RSPEC], ids=["lenet5", "resnet20"])
def test_pruned_model_rebuilds_from_spec_and_policy(tmp_path, x, spec):
    model = _trained_ish(spec)
    pol = _policy(spec, model, 0.4)
    pruned = apply_policy(model, pol, example_input=example_input(spec))
    path = export(pruned, tmp_path / "p.amc", policy=pol)  # the spec comes from the policy
    doc = torch.load(path, weights_only=True)  # no pickle needed
    assert doc["architecture"] is None and doc["packed"] is None
    loaded, meta = load_with_metadata(path, allow_pickle=False)
    _same(pruned, loaded, x)
    assert meta["policy"] == pol.to_dict()
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in pruned.parameters())
    struct = build_structure(spec, pol)
    assert {k: v.shape for k, v in struct.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}


def test_quantized_pruned_model_is_packed_and_smaller(tmp_path, x):
    model = _trained_ish(RSPEC)
    pol = _policy(RSPEC, model, 0.5, w_bits=4, a_bits=6)
    cal = [torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    q = apply_policy(model, pol, example_input=example_input(RSPEC), quant_calibration=cal)
    fpath = export(apply_policy(model, _policy(RSPEC, model, 0.5), example_input=example_input(RSPEC)),
                   tmp_path / "f.amc", model_spec=RSPEC, policy=_policy(RSPEC, model, 0.5))
    qpath = export(q, tmp_path / "q.amc", policy=pol, model_spec=RSPEC)
    loaded = load(qpath, allow_pickle=False)
    _same(q, loaded, x)
    meta = read_metadata(qpath)
    assert meta["quantized"] is True
    packed = torch.load(qpath, weights_only=True)["packed"]
    assert packed["architecture"] is None
    # 4-bit codes: the file is far below the float file of the same pruned model
    assert qpath.stat().st_size < 0.5 * fpath.stat().st_size


def test_sparse_model_round_trip(tmp_path, x):
    model = _trained_ish(SPEC)
    pol = _policy(SPEC, model, 1.0, sparsity=0.7)
    sparse = apply_policy(model, pol, example_input=example_input(SPEC))
    assert float((sparse.conv2.weight == 0).float().mean()) == pytest.approx(0.7, abs=0.01)
    loaded = load(export(sparse, tmp_path / "s.amc", policy=pol))
    _same(sparse, loaded, x)


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_model_without_spec_pickles_its_architecture(tmp_path, x, caplog):
    model = _Custom().eval()
    path = export(model, tmp_path / "c.amc")
    _same(model, load(path), x)
    with pytest.raises(AmcError, match="pickled architecture.*allow_pickle=True"):
        load(path, allow_pickle=False)
    # a spec that does not fit the model falls back to pickling (with a warning), never a wrong model
    wrong = build_model(SPEC).eval()
    pruned = apply_policy(wrong, _policy(SPEC, wrong, 0.5), example_input=example_input(SPEC))
    path2 = export(pruned, tmp_path / "w.amc", model_spec=SPEC)  # no policy: channels unknown
    assert "pickled architecture" in caplog.text
    _same(pruned, load(path2), x)


def test_read_errors(tmp_path):
    with pytest.raises(AmcError, match="does not exist"):
        load(tmp_path / "nope.amc")
    bad = tmp_path / "bad.amc"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(AmcError, match="cannot read model file .*corrupt"):
        load(bad)
    ckpt = save_checkpoint(tmp_path / "c.pt", model=build_model(SPEC), model_spec=SPEC)
    with pytest.raises(AmcError, match="not an exported amc model .*training checkpoint"):
        load(ckpt)
    newer = tmp_path / "newer.amc"
    doc = torch.load(export(build_model(SPEC), tmp_path / "ok.amc", model_spec=SPEC), weights_only=True)
    torch.save({**doc, "version": 99}, newer)
    with pytest.raises(AmcError, match="export version 99, newer"):
        load(newer)
    with pytest.raises(AmcError, match="needs an nn.Module"):
        export("model", tmp_path / "x.amc")


def test_torchscript_and_onnx(tmp_path, x):
    model = _trained_ish(RSPEC)
    pol = _policy(RSPEC, model, 0.5, w_bits=5, a_bits=5)
    cal = [torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    q = apply_policy(model, pol, example_input=example_input(RSPEC), quant_calibration=cal)
    ts = export_torchscript(q, tmp_path / "q.ts", x[:2])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.load(str(ts))
    with torch.no_grad():
        assert torch.equal(traced(x), q(x))  # a batch size other than the traced one
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    small = _trained_ish(SPEC)  # a small graph: the ONNX exporter takes seconds per op kind
    q = apply_policy(small, _policy(SPEC, small, 0.5, w_bits=5, a_bits=5), example_input=example_input(SPEC),
                     quant_calibration=cal)
    path = export_onnx(q, tmp_path / "q.onnx", x[:2])
    out = ReferenceEvaluator(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = q(x).numpy()
    assert abs(out - ref).max() < 1e-4


def test_export_cli_from_a_model_file(tmp_path, capsys):
    model = _trained_ish(SPEC)
    src = export(model, tmp_path / "m.amc", model_spec=SPEC)
    assert main(["export", "--model-file", str(src), "--out", str(tmp_path / "copy.amc"),
                 "--torchscript", str(tmp_path / "m.ts")]) == 0
    out = capsys.readouterr().out
    assert "copy.amc" in out and "bytes" in out and "torchscript" in out
    assert main(["export", "--model-file", str(src)]) == 2
    assert "nothing to write" in capsys.readouterr().err
