"""Deep Compression: k-means sharing, centroid gradients, masks kept while retraining, the pipeline
and its CLI, bad input."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

import amc
from amc.cli import main
from amc.deep_compression import (
    DeepCompressionConfig,
    SharedWeight,
    deep_compress,
    kmeans_1d,
    layer_table,
    make_policy,
    policy_targets,
    share_weights,
    shared_to_quantized,
)
from amc.errors import AmcError
from amc.finetune import FinetuneConfig, finetune
from amc.models import example_input, resolve_spec
from amc.pruning import magnitude_prune
from amc.training import TrainConfig, load_checkpoint, train
from tests._paths import LENET_DIGITS

REF = LENET_DIGITS
DENSITY = {"conv1": 0.7, "conv2": 0.3, "fc1": 0.1, "fc2": 0.2, "fc3": 0.3}
BITS = {"conv1": 4, "conv2": 4, "fc1": 3, "fc2": 3, "fc3": 4}


@pytest.fixture(scope="module")
def ref():
    model, ckpt = load_checkpoint(REF)
    return model.eval(), ckpt["model_spec"]


def _policy(ref):
    model, spec = ref
    return make_policy(model, example_input(resolve_spec(spec)), density=DENSITY, bits=BITS, model_spec=spec)


def test_kmeans_1d_linear_init_and_nearest_codes() -> None:
    v = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 9.9, 10.0])
    codes, cent = kmeans_1d(v, 3)
    assert torch.allclose(cent, torch.tensor([0.1, 5.05, 9.95]))
    assert codes.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert torch.all(cent[1:] >= cent[:-1])
    with pytest.raises(AmcError):
        kmeans_1d(v, 0)


def test_centroid_gradient_is_the_sum_over_its_weights() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(20, 6)
    with torch.no_grad():
        lin.weight.mul_((torch.rand_like(lin.weight) < 0.5).float())
    m = share_weights(nn.Sequential(lin), {"0": 3})
    sw = m[0]
    assert isinstance(sw, SharedWeight) and sw.centroids.numel() == 7
    assert torch.equal(sw.codes == 7, lin.weight == 0)  # the zero code is the pruned weights'
    x = torch.randn(5, 20)
    m(x).square().sum().backward()
    w = sw.shared_weight().detach().requires_grad_(True)  # the same forward with the weight as a leaf
    nn.functional.linear(x, w, lin.bias.detach()).square().sum().backward()
    expected = torch.zeros(8).index_add_(0, sw.codes.reshape(-1), w.grad.reshape(-1))[:7]
    torch.testing.assert_close(sw.centroids.grad, expected)
    assert lin.weight.grad is None  # the layer's own weight is not used


def test_sharing_keeps_zeros_and_centroid_count_through_training(ref, digits, tmp_path) -> None:
    model, _ = ref
    m = magnitude_prune(model, {k: 1 - v for k, v in DENSITY.items()})
    zeros = {n: (m.get_submodule(n).weight == 0).clone() for n in DENSITY}
    share_weights(m, BITS)
    for p in m.parameters():
        p.requires_grad_(False)
    for mod in m.modules():
        if isinstance(mod, SharedWeight):
            mod.centroids.requires_grad_(True)
    before = {n: m.get_submodule(n).centroids.detach().clone() for n in BITS}
    train(m, digits, TrainConfig(epochs=1, steps_per_epoch=5, lr=0.01, weight_decay=0.0, augment=False, device="cpu",
                                 eval_test=False), run_dir=tmp_path / "share")
    assert any(not torch.equal(before[n], m.get_submodule(n).centroids) for n in BITS)  # it trained
    q = shared_to_quantized(m)
    for row in layer_table(q):
        n = row["layer"]
        assert row["bits"] == BITS[n] and row["values"] <= 2 ** BITS[n]
        deq = q.get_submodule(n).quantized_weight().dequantize()
        assert torch.equal(deq == 0, zeros[n])  # pruned stay zero, kept stay nonzero


def test_retraining_keeps_zeros_at_zero(ref, digits, tmp_path) -> None:
    model, _ = ref
    m = magnitude_prune(model, {"fc1": 0.9, "conv2": 0.5})
    zeros = {n: m.get_submodule(n).weight == 0 for n in ("fc1", "conv2")}
    w0 = m.fc1.weight.detach().clone()
    finetune(m, digits, FinetuneConfig(epochs=1, steps_per_epoch=5, kd=False, augment=False, device="cpu"),
             run_dir=tmp_path / "ft", sparse_layers=["fc1", "conv2"])
    assert not torch.equal(w0, m.fc1.weight)
    for n, z in zeros.items():
        assert torch.equal(m.get_submodule(n).weight == 0, z)


def test_pipeline_table_files_and_resume(ref, digits, tmp_path) -> None:
    model, spec = ref
    pol = _policy(ref)
    cfg = DeepCompressionConfig(prune_steps=2, prune_epochs=1, share_epochs=1, steps_per_epoch=4, batch_size=32,
                                augment=False, device="cpu")
    res = deep_compress(model, digits, pol, cfg, run_dir=tmp_path / "dc", model_spec=spec)
    stages = [r["stage"] for r in res.table]
    assert stages == ["original", "pruned", "quantized", "huffman"]
    sizes = [r["file_bytes"] for r in res.table]
    assert sizes[0] > sizes[1] > sizes[2] >= sizes[3]
    assert res.table[0]["weight_ratio"] == pytest.approx(1.0, abs=0.01)
    assert res.table[-1]["weight_ratio"] > 10
    for row in layer_table(res.model):
        assert row["density"] == pytest.approx(DENSITY[row["layer"]], abs=0.01)
        assert row["values"] <= 2 ** BITS[row["layer"]]
    loaded = amc.load(res.table[-1]["file"])
    x = digits.tensors("test")[0][:32]
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model.eval()(x))
    doc = json.loads((tmp_path / "dc" / "deep_compression.json").read_text())
    assert [r["stage"] for r in doc["table"]] == stages and doc["float32_bytes"] == 4 * sum(
        p.numel() for p in model.parameters())
    again = deep_compress(model, digits, pol, cfg, run_dir=tmp_path / "dc", model_spec=spec, resume=True)
    assert [r["test_top1"] for r in again.table] == [r["test_top1"] for r in res.table]


def test_bad_input(ref) -> None:
    model, spec = ref
    with pytest.raises(AmcError, match="prune_steps"):
        DeepCompressionConfig(prune_steps=0)
    with pytest.raises(AmcError, match="share_lr"):
        DeepCompressionConfig(share_lr=0)
    with pytest.raises(AmcError, match="does not have"):
        make_policy(model, example_input(resolve_spec(spec)), density={"nope": 0.1}, bits=4)
    with pytest.raises(AmcError, match="density"):
        make_policy(model, example_input(resolve_spec(spec)), density=1.5, bits=4)
    with pytest.raises(AmcError, match="1..8"):
        share_weights(magnitude_prune(model, {}), {"fc1": 9})
    pol = make_policy(model, example_input(resolve_spec(spec)), density=0.5, bits={}, model_spec=spec)
    with pytest.raises(AmcError, match="w_bits"):
        policy_targets(pol)


def test_cli_deep_compression(ref, tmp_path, capsys) -> None:
    pol = _policy(ref)
    pol.save(tmp_path / "p.json")
    args = ["finetune", "--policy", str(tmp_path / "p.json"), "--checkpoint", str(REF), "--dataset", "digits",
            "--deep-compression", "--iterative", "1", "--epochs", "1", "--share-epochs", "1", "--steps-per-epoch", "3",
            "--no-augment", "--device", "cpu", "--run-dir", str(tmp_path / "run")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "huffman" in out and "x float32" in out
    assert main(args) == 2  # the run dir holds a run: --resume or --overwrite
    assert "already holds" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    stage2 = tmp_path / "run" / "stage2-quantized.amc"
    assert main(["export", "--model-file", str(stage2), "--out", str(tmp_path / "h.amc"), "--huffman"]) == 0
    assert (tmp_path / "h.amc").stat().st_size < stage2.stat().st_size
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(amc.load(tmp_path / "h.amc")(x), amc.load(stage2)(x))
    channel = tmp_path / "c.json"
    doc = pol.to_dict()
    doc["granularity"] = "channel"
    for ly in doc["layers"]:
        ly["sparsity"] = None
    channel.write_text(json.dumps(doc))
    bad = ["finetune", "--policy", str(channel), "--checkpoint", str(REF), "--dataset", "digits", "--deep-compression",
           "--epochs", "1", "--device", "cpu", "--run-dir", str(tmp_path / "run2")]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "fine-granularity" in err
