#!/usr/bin/env python
"""Fine-tuning with vs without knowledge distillation, same epochs, same pruned model.

LeNet-5 on Fashion-MNIST (the reference checkpoint, 91.5 % test), pruned to 50 % MACs with the
uniform policy (every group keeps the same fraction; ``--policy`` takes a searched policy instead),
fine-tuned for ``--epochs`` epochs with Hinton KD from the uncompressed model (T=4, alpha=0.9) and
with labels only, for each seed. Everything goes through ``amc.finetune.finetune_policy`` (the same
code as ``amc finetune``) into ``OUT/{kd,nokd}-s<seed>``; the table is printed and written to
``OUT/bench_finetune_kd.json``.

    python scripts/bench_finetune_kd.py                  # 2 epochs, seeds 0 and 1, ~3 min on one thread
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from benchmarks.harness import Experiment

ROOT = Path(__file__).resolve().parent.parent


def arguments(p) -> None:
    p.add_argument("--checkpoint", default=str(ROOT / "reference" / "lenet5-fashion-mnist.pt"),
                   help="trained LeNet-5 (amc train --model lenet5 --dataset fashion-mnist ...)")
    p.add_argument("--data-dir", required=True, help="folder of the Fashion-MNIST IDX .gz files (e.g. ../shared/datasets/fashion-mnist)")
    p.add_argument("--budget", default="macs=0.5", help="uniform policy budget (default macs=0.5)")
    p.add_argument("--policy", help="a searched policy instead of the uniform one")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (default 2)")
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (default 0.01)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="fine-tuning seeds (default 0 1)")


def body(args) -> dict:
    from amc.finetune import FinetuneConfig, finetune_policy, prepare
    from amc.training import load_checkpoint
    from amc.transfer import uniform_policy

    out = args.out
    if args.policy:
        policy = args.policy
    else:
        model, ckpt = load_checkpoint(args.checkpoint)
        from amc.models import example_input

        policy = uniform_policy(model, example_input(ckpt["model_spec"]), args.budget, model_spec=ckpt["model_spec"])
    setup = prepare(policy, checkpoint=args.checkpoint, dataset="fashion-mnist", data_dir=args.data_dir,
                    device="cpu")
    rows = []
    for seed in args.seeds:
        for kd in (True, False):
            cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, kd=kd, seed=seed, device="cpu",
                                 num_threads=args.threads)
            t0 = time.perf_counter()
            res = finetune_policy(setup, cfg, run_dir=out / f"{'kd' if kd else 'nokd'}-s{seed}")
            s = res.summary
            rows.append({"kd": kd, "seed": seed, "epochs": args.epochs, "lr": args.lr,
                         "before_val": s["before"]["val_top1"], "before_test": s["before"]["test_top1"],
                         "after_val": s["after"]["val_top1"], "after_test": s["after"]["test_top1"],
                         "time_s": time.perf_counter() - t0})
            r = rows[-1]
            print(f"{'KD   ' if kd else 'no KD'} seed {seed}: test top-1 {r['before_test']:.2f} -> {r['after_test']:.2f}"
                  f" (val {r['before_val']:.2f} -> {r['after_val']:.2f}), {r['time_s']:.0f}s", flush=True)
    base = setup.evaluate(setup.base_model, "test")
    costs = setup.policy.achieved or {}
    summary = {
        "checkpoint": args.checkpoint, "policy": args.policy or f"uniform {args.budget}",
        "keep_ratio": setup.policy.search.get("keep_ratio"), "achieved": costs,
        "uncompressed_test_top1": base, "uncompressed_val_top1": setup.evaluate(setup.base_model, "val"),
        "runs": rows,
    }
    for kd in (True, False):
        sel = [r for r in rows if r["kd"] == kd]
        summary["kd" if kd else "no_kd"] = {k: statistics.mean(r[k] for r in sel)
                                            for k in ("after_val", "after_test", "time_s")}
    print(f"\nLeNet-5 / Fashion-MNIST, {summary['policy']} (MACs ratio {costs.get('macs_ratio', float('nan')):.3f}),"
          f" {args.epochs} epoch(s), lr {args.lr}, seeds {args.seeds}")
    print(f"{'':<10} {'test top-1':>10} {'val top-1':>10} {'time/run':>9}")
    print(f"{'original':<10} {base:>10.2f} {summary['uncompressed_val_top1']:>10.2f}")
    print(f"{'pruned':<10} {rows[0]['before_test']:>10.2f} {rows[0]['before_val']:>10.2f}")
    for key, label in (("no_kd", "FT no KD"), ("kd", "FT + KD")):
        m = summary[key]
        print(f"{label:<10} {m['after_test']:>10.2f} {m['after_val']:>10.2f} {m['time_s']:>8.0f}s")
    return summary


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/finetune_kd", result="bench_finetune_kd.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
