#!/usr/bin/env python
"""Engine benchmark: prune + reconstruct time, accuracy kept with and without reconstruction, and
predicted vs measured latency. Prints a table and writes JSON.

    python scripts/bench_engine.py --checkpoint reference/lenet5-fashion-mnist.pt \
        --dataset fashion-mnist --data-dir ../shared/datasets/fashion-mnist --out bench_out/engine.json

Timings: take them with nothing else running (a background training halves them).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from amc.data import get_dataset
from amc.latency import LatencyTable, measure_latency
from amc.models import build_model, example_input
from amc.pruning import Pruner
from amc.training import load_checkpoint
from amc.transfer import uniform_policy
from benchmarks.harness import Experiment


def uniform_keep(pruner: Pruner, target: float) -> tuple[list[float], float]:
    """The uniform baseline (:func:`amc.transfer.uniform_policy`) at ``macs=target``: the groups' keep
    ratios (kept / total channels) and the common ratio they were rounded up from."""
    policy = uniform_policy(pruner.model, pruner.example_input, f"macs={target}", graph=pruner.graph)
    return [g.keep_ratio for g in policy.groups], float(policy.search["keep_ratio"])


def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float(sum((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum() for i in range(0, len(x), 1000))
                     * 100.0 / len(x))


def arguments(ap) -> None:
    ap.add_argument("--checkpoint", help="trained checkpoint for the accuracy part (amc train)")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir")
    ap.add_argument("--target", type=float, default=0.5, help="MACs ratio")
    ap.add_argument("--calibration", type=int, default=256, help="calibration images for reconstruction")


def body(args) -> dict:
    result: dict = {"threads": args.threads, "target_macs": args.target}

    # (1) prune + reconstruct time on ResNet-20 at 32x32
    spec = {"name": "resnet20", "num_classes": 10, "in_channels": 3, "image_size": [32, 32]}
    model = build_model(spec).eval()
    x = example_input(spec)
    t0 = time.perf_counter()
    pruner = Pruner(model, x)
    trace_s = time.perf_counter() - t0
    cm = pruner.cost_model()
    keep, _ = uniform_keep(pruner, args.target)
    cal = torch.randn(args.calibration, 3, 32, 32)
    pruner.prune(keep)  # importance ranking is computed once, on the first call
    times = {"prune": [], "prune_reconstruct": [], "reconstruct": []}
    for _ in range(5):
        t = time.perf_counter()
        pruner.prune(keep)
        times["prune"].append(time.perf_counter() - t)
        t = time.perf_counter()
        pruner.prune(keep, reconstruct=True, calibration=cal)
        times["prune_reconstruct"].append(time.perf_counter() - t)
        times["reconstruct"].append(pruner.timing.reconstruct)
    result["resnet20"] = {"trace_s": trace_s, "macs_ratio": cm.macs(keep) / cm.base_macs,
                          **{f"{k}_s": float(np.median(v)) for k, v in times.items()}}

    # (2) accuracy kept with and without reconstruction on a trained model
    if args.checkpoint:
        trained, ckpt = load_checkpoint(args.checkpoint)
        splits = get_dataset(args.dataset, data_dir=args.data_dir)
        trained.eval()
        xv, yv = splits.tensors("val")
        xt, yt = splits.tensors("test")
        p = Pruner(trained, xv[:1])
        cmt = p.cost_model()
        k, common = uniform_keep(p, args.target)
        cal_imgs = splits.calibration_batches(1, args.calibration, seed=0)[0][0]
        plain = p.prune(k)
        rec = p.prune(k, reconstruct=True, calibration=cal_imgs)
        result["accuracy"] = {
            "model": ckpt.get("model_spec", {}).get("name"), "dataset": args.dataset,
            "macs_ratio": cmt.macs(k) / cmt.base_macs, "keep_ratio": common,
            "base_val": top1(trained, xv, yv), "base_test": top1(trained, xt, yt),
            "pruned_val": top1(plain, xv, yv), "pruned_test": top1(plain, xt, yt),
            "reconstructed_val": top1(rec, xv, yv), "reconstructed_test": top1(rec, xt, yt),
        }

    # (3) latency: table prediction vs measurement (batch 1 and 64)
    lat = []
    rng = np.random.default_rng(0)
    policies = {"full": [1.0] * len(keep), "uniform-0.75": [0.75] * len(keep), f"uniform-macs{args.target}": keep,
                "random": list(rng.uniform(0.2, 1.0, len(keep)))}
    for batch in (1, 64):
        table = LatencyTable.build(model, pruner.graph, batch_size=batch, threads=args.threads,
                                   repeats=10 if batch == 64 else 20)
        for name, k in policies.items():
            pm = pruner.prune(k)
            measured = measure_latency(pm, (3, 32, 32), batch_size=batch, threads=args.threads,
                                       repeats=20 if batch == 64 else 100).median_ms
            predicted = table.predict(*cm.layer_channels(k))
            lat.append({"batch": batch, "policy": name, "macs_ratio": cm.macs(k) / cm.base_macs,
                        "predicted_ms": predicted, "measured_ms": measured,
                        "error_pct": 100 * (predicted - measured) / measured})
    result["latency"] = lat

    r = result["resnet20"]
    print(f"ResNet-20 32x32 at {r['macs_ratio']:.3f} MACs: trace {r['trace_s']:.2f}s, prune {r['prune_s'] * 1000:.0f} ms, "
          f"prune+reconstruct ({args.calibration} images) {r['prune_reconstruct_s'] * 1000:.0f} ms")
    if "accuracy" in result:
        a = result["accuracy"]
        print(f"{a['model']} on {a['dataset']} at {a['macs_ratio']:.3f} MACs (uniform keep {a['keep_ratio']:.3f}): "
              f"val {a['base_val']:.2f} -> {a['pruned_val']:.2f} plain, {a['reconstructed_val']:.2f} reconstructed; "
              f"test {a['base_test']:.2f} -> {a['pruned_test']:.2f} / {a['reconstructed_test']:.2f}")
    print(f"{'batch':>5} {'policy':>18} {'MACs':>6} {'predicted ms':>13} {'measured ms':>12} {'error':>7}")
    for row in lat:
        print(f"{row['batch']:>5} {row['policy']:>18} {row['macs_ratio']:>6.3f} {row['predicted_ms']:>13.3f} "
              f"{row['measured_ms']:>12.3f} {row['error_pct']:>6.1f}%")
    return result


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/engine.json", threads=2)

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
