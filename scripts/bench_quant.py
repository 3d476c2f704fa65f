#!/usr/bin/env python
"""Mixed-precision and joint-search benchmark (HAQ-style). Prints tables and writes JSON.

(a) ``size=0.125`` of fp32 (4 bits per weight on average): DDPG mixed precision (weights and
    activations per layer) vs uniform bits at the same budget, before and after a short KD fine-tune;
(b) one ``bitops=`` budget: joint search (channels + bits) vs prune-only (channels, every layer at
    W8A8) vs quant-only (bits, no pruning), all DDPG with the same number of evaluations.

    python scripts/bench_quant.py --checkpoint reference/lenet5-fashion-mnist.pt --dataset fashion-mnist \
        --data-dir ../shared/datasets/fashion-mnist --episodes 150 --warmup 50 --bitops bitops=0.03 \
        --out bench_out/quant

Accuracy before fine-tuning is the search's val top-1 (the first ``--eval-limit`` images of the
checkpoint's own val holdout) and the test top-1 of the rebuilt best policy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amc.finetune import FinetuneConfig, finetune_policy, prepare
from benchmarks.harness import Experiment, search_once


def _finetune(out: Path, name: str, args: argparse.Namespace) -> dict:
    run_dir = out / f"{name}-ft"
    done = run_dir / "finetune_summary.json"
    if done.exists():
        return json.loads(done.read_text())
    # (given, not read from the policy: the policies of searches finished before version 2 record neither)
    setup = prepare(out / name / "best_policy.json", checkpoint=args.checkpoint, dataset=args.dataset,
                    data_dir=args.data_dir, device="cpu")
    cfg = FinetuneConfig(epochs=1, steps_per_epoch=args.ft_steps, lr=0.01, device="cpu", seed=0)
    return finetune_policy(setup, cfg, run_dir=run_dir).summary


def _acc(ft: dict, when: str, split: str) -> float | None:
    steps = ft.get("steps") or [{}]
    entry = steps[0].get(when) if when == "before" else steps[-1].get("after")
    return None if not entry else entry.get(f"{split}_top1")


def arguments(ap) -> None:
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--eval-limit", type=int, default=2000)
    ap.add_argument("--size", default="size=0.125")
    ap.add_argument("--bitops", default="bitops=0.03", help="reachable by all three (quant-only keeps the first/last layers at W8A8)")
    ap.add_argument("--ft-steps", type=int, default=200, help="fine-tuning steps (batch 128)")
    ap.add_argument("--seed", type=int, default=0)


def body(args) -> dict:
    out = args.out
    common = dict(checkpoint=args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                  env_kwargs={"eval_limit": args.eval_limit}, threads=args.threads, noise_decay=0.99)
    ddpg = dict(agent="ddpg", episodes=args.episodes, warmup=args.warmup)
    runs = {
        "a-ddpg": dict(mode="quant", target=args.size, **ddpg),
        "a-uniform": dict(mode="quant", target=args.size, agent="uniform", episodes=30, warmup=0),
        "b-joint": dict(mode="joint", target=args.bitops, **ddpg),
        "b-prune-only": dict(mode="joint", target=args.bitops, w_bits=(8, 8), a_bits=(8, 8), **ddpg),
        "b-quant-only": dict(mode="quant", target=args.bitops, **ddpg),
    }
    result: dict = {"config": vars(args), "runs": {}}
    for name, kw in runs.items():
        s = search_once(out / name, **common, **kw)
        policy = json.loads((out / name / "best_policy.json").read_text())
        ft = _finetune(out, name, args) if name.startswith("a-") else None
        result["runs"][name] = {
            "best_val": s["best_accuracy"], "base_val": s["base_accuracy"], "achieved": s["achieved"],
            "evaluations": s.get("evaluations", s["episodes"]), "wall_time_s": s["wall_time_s"],
            "bits": [(ly["name"], ly["w_bits"], ly["a_bits"]) for ly in policy["layers"]],
            "keep": [round(g["keep_ratio"], 3) for g in policy["groups"]] if policy["mode"] != "quant" else None,
            "finetune": None if ft is None else {
                "test_before": _acc(ft, "before", "test"), "test_after": _acc(ft, "after", "test"),
                "val_before": _acc(ft, "before", "val"), "val_after": _acc(ft, "after", "val")},
        }
    r = result["runs"]
    print(f"(a) {args.size}: mixed precision vs uniform bits ({args.dataset}, base val "
          f"{r['a-ddpg']['base_val']:.2f})")
    print("| method | evaluations | size ratio | bitops ratio | val top-1 | test top-1 | test after KD fine-tune |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in ("a-uniform", "a-ddpg"):
        x, ft = r[name], r[name]["finetune"] or {}
        print(f"| {name[2:]} | {x['evaluations']} | {x['achieved']['size_ratio']:.3f} | "
              f"{x['achieved']['bitops_ratio']:.4f} | {x['best_val']:.2f} | {ft.get('test_before', float('nan')):.2f} | "
              f"{ft.get('test_after', float('nan')):.2f} |")
    print(f"\n(b) {args.bitops}: joint vs prune-only (W8A8) vs quant-only, DDPG, {args.episodes} evaluations each")
    print("| method | bitops ratio | macs ratio | size ratio | best val top-1 |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("b-joint", "b-prune-only", "b-quant-only"):
        x = r[name]
        print(f"| {name[2:]} | {x['achieved']['bitops_ratio']:.4f} | {x['achieved']['macs_ratio']:.3f} | "
              f"{x['achieved']['size_ratio']:.3f} | {x['best_val']:.2f} |")
    return result


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/quant", result="quant.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
