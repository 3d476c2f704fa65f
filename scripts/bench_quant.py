#!/usr/bin/env python
"""Mixed-precision and joint-search benchmark (HAQ-style). Prints tables and writes JSON.

(a) ``size=0.125`` of fp32 (4 bits per weight on average): DDPG mixed precision (weights and
    activations per layer) vs uniform bits at the same budget, before and after a short KD fine-tune;
    with ``--arms a-joint a-joint-warm a-prune-only a-joint-sensitivity`` the joint searches at that size budget too;
(b) one ``bitops=`` budget: joint search (channels + bits) vs prune-only (channels, every layer at
    W8A8) vs quant-only (bits, no pruning), all DDPG with the same number of evaluations, next to
    uniform bits and the sensitivity agent's joint policy (``--arms``); ``--ft-b`` fine-tunes them too.
    ``a-joint-warm`` and ``b-joint-warm`` are the joint DDPG searches warm-started from the uniform policy
    at the budget (``--warm-start uniform``: uniform bits with every channel kept, i.e. uniform W4A4 here).

``--ft-seeds 0 1 2`` fine-tunes every policy once per seed (seed 0 in ``<arm>-ft/``, the others in
``<arm>-ft-seed<s>/``) and reports the mean ± std after fine-tuning next to each seed's value.

A budget may name uniform bits instead of a ratio: ``bitops=W4A4`` (or ``size=W4A4``) is the cost of
every layer at 4-bit weights and activations (the first and last at 8 bits, HAQ's rule) relative to
fp32, as ``CompressionEnv.uniform_bits_ratio`` computes it for the checkpoint's model.

    python scripts/bench_quant.py --checkpoint reference/lenet5-fashion-mnist.pt --dataset fashion-mnist \
        --data-dir ../shared/datasets/fashion-mnist --episodes 150 --warmup 50 --bitops bitops=0.03 \
        --out bench_out/quant
    # issue 19, point 4: ResNet-20 / CIFAR-10 at the BitOps of uniform W4A4, with the search's proxy
    python scripts/bench_quant.py --checkpoint reference/resnet20-cifar10-kd-resnet56.pt --dataset cifar10 \
        --data-dir data --bitops bitops=W4A4 --arms b --proxy auto --eval-limit 1000 \
        --episodes 300 --warmup 100 --ft-b --ft-steps 352 --out bench_out/quant-r20
    # ... and at the size of uniform 4-bit: every arm of (a), each fine-tuned
    python scripts/bench_quant.py --checkpoint reference/resnet20-cifar10-kd-resnet56.pt --dataset cifar10 \
        --data-dir data --size size=W4A4 --arms a --proxy auto --eval-limit 1000 \
        --episodes 300 --warmup 100 --ft-steps 352 --out bench_out/quant-r20

Accuracy before fine-tuning is the search's val top-1 (the first ``--eval-limit`` images of the
checkpoint's own val holdout) and the test top-1 of the rebuilt best policy.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from amc.errors import AmcError
from amc.finetune import FinetuneConfig, finetune_policy, prepare
from benchmarks.harness import Experiment, search_once


def _finetune(out: Path, name: str, args: argparse.Namespace, seed: int = 0) -> dict:
    run_dir = out / (f"{name}-ft" if seed == 0 else f"{name}-ft-seed{seed}")
    done = run_dir / "finetune_summary.json"
    if done.exists():
        return json.loads(done.read_text())
    # (given, not read from the policy: the policies of searches finished before version 2 record neither)
    setup = prepare(out / name / "best_policy.json", checkpoint=args.checkpoint, dataset=args.dataset,
                    data_dir=args.data_dir, device="cpu")
    cfg = FinetuneConfig(epochs=1, steps_per_epoch=args.ft_steps, lr=0.01, device="cpu", seed=seed)
    return finetune_policy(setup, cfg, run_dir=run_dir, resume=True).summary  # an interrupted QAT continues


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
    ap.add_argument("--size", default="size=0.125", help="budget of (a): size=RATIO or size=W<b>A<b>")
    ap.add_argument("--bitops", default="bitops=0.03", help="budget of (b): bitops=RATIO or bitops=W<b>A<b> "
                    "(reachable by every arm: quant-only keeps the first/last layers at W8A8)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS) + ["a", "b"],
                    help="which searches to run (a, b: all of that part)")
    ap.add_argument("--proxy", default="auto", help="the searches' proxy (amc.proxies)")
    ap.add_argument("--eval-precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--ft-steps", type=int, default=200, help="fine-tuning steps (batch 128)")
    ap.add_argument("--ft-b", action="store_true", help="fine-tune the (b) policies too (QAT where bits are chosen)")
    ap.add_argument("--ft-seeds", type=int, nargs="+", default=[0],
                    help="fine-tune seeds (the table gives their mean and std)")
    ap.add_argument("--seed", type=int, default=0)


#: search name -> (mode, agent, part's budget, extra SearchConfig fields)
ARMS: dict[str, tuple[str, str, str, dict]] = {
    "a-ddpg": ("quant", "ddpg", "size", {}),
    "a-uniform": ("quant", "uniform", "size", {}),
    "a-joint": ("joint", "ddpg", "size", {}),
    "a-prune-only": ("joint", "ddpg", "size", {"w_bits": (8, 8), "a_bits": (8, 8)}),
    "a-joint-sensitivity": ("joint", "sensitivity", "size", {}),
    # DDPG's first episodes are the uniform policy at the budget and its neighbours (``--warm-start uniform``)
    "a-joint-warm": ("joint", "ddpg", "size", {"warm_start": "uniform"}),
    "b-joint": ("joint", "ddpg", "bitops", {}),
    "b-prune-only": ("joint", "ddpg", "bitops", {"w_bits": (8, 8), "a_bits": (8, 8)}),
    "b-quant-only": ("quant", "ddpg", "bitops", {}),
    "b-uniform": ("quant", "uniform", "bitops", {}),
    "b-joint-sensitivity": ("joint", "sensitivity", "bitops", {}),
    "b-joint-warm": ("joint", "ddpg", "bitops", {"warm_start": "uniform"}),
    # the sensitivity table probed around the uniform policy instead of around float
    "b-joint-sensitivity-uniform": ("joint", "sensitivity", "bitops", {"agent_kwargs": {"around": "uniform"}}),
}


def _budget(target: str, args) -> str:
    """``METRIC=RATIO`` as given, or ``METRIC=W<b>A<b>`` turned into uniform b-bit's ratio."""
    metric, _, value = target.partition("=")
    m = re.fullmatch(r"[wW](\d+)[aA](\d+)", value)
    if not m:
        return target
    if m[1] != m[2]:
        raise AmcError(f"{target}: uniform budgets give one width for weights and activations, e.g. {metric}=W4A4")
    from amc.data import get_dataset
    from amc.training import load_checkpoint
    from envs import CompressionEnv, EnvConfig

    model, ckpt = load_checkpoint(args.checkpoint)
    data = ckpt.get("data") or {}
    splits = get_dataset(args.dataset, data_dir=args.data_dir, val_size=data.get("val_size"),
                         seed=int(data.get("seed") or 0))
    env = CompressionEnv(model.eval(), splits, EnvConfig(mode="quant", target=f"{metric}=1.0", eval_limit=64))
    ratio = env.uniform_bits_ratio(int(m[1]), metric=metric)
    print(f"{target}: uniform {m[1]}-bit is {metric}={ratio:.6f}")
    return f"{metric}={ratio:.6f}"


def body(args) -> dict:
    out = args.out
    common = dict(checkpoint=args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                  env_kwargs={"eval_limit": args.eval_limit}, threads=args.threads, noise_decay=0.99,
                  proxy=args.proxy, eval_precision=args.eval_precision)
    arms = [n for n in ARMS if n in args.arms or n[0] in args.arms]
    budgets = {part: _budget(getattr(args, part), args) for part in ("size", "bitops")
               if any(ARMS[n][2] == part for n in arms)}
    result: dict = {"config": vars(args), "budgets": budgets, "runs": {}}
    for name in arms:
        mode, agent, part, extra = ARMS[name]
        episodes = (dict(episodes=30, warmup=0) if agent == "uniform" else dict(episodes=1, warmup=0)
                    if agent == "sensitivity" else dict(episodes=args.episodes, warmup=args.warmup))
        s = search_once(out / name, **common, mode=mode, agent=agent, target=budgets[part], **episodes, **extra)
        policy = json.loads((out / name / "best_policy.json").read_text())
        fts = ([_finetune(out, name, args, seed) for seed in args.ft_seeds]
               if name.startswith("a-") or args.ft_b else [])
        ft = fts[0] if fts else None
        after = [_acc(f, "after", "test") for f in fts]
        result["runs"][name] = {
            "best_val": s["best_accuracy"], "base_val": s["base_accuracy"], "achieved": s["achieved"],
            # a resumed sensitivity run counts only this session's evaluations: its table holds them all
            "evaluations": (s["table_rows"] + 1 if agent == "sensitivity" and "table_rows" in s
                            else s.get("evaluations", s["episodes"])), "wall_time_s": s["wall_time_s"],
            "bits": [(ly["name"], ly["w_bits"], ly["a_bits"]) for ly in policy["layers"]],
            "keep": [round(g["keep_ratio"], 3) for g in policy["groups"]] if policy["mode"] != "quant" else None,
            "finetune": None if ft is None else {
                "test_before": _acc(ft, "before", "test"), "test_after": _acc(ft, "after", "test"),
                "val_before": _acc(ft, "before", "val"), "val_after": _acc(ft, "after", "val"),
                "seeds": list(args.ft_seeds), "test_after_seeds": after},
        }
    for part in budgets:
        print(f"\n({'a' if part == 'size' else 'b'}) {budgets[part]} ({args.dataset})")
        print("| method | evaluations | size ratio | bitops ratio | macs ratio | val top-1 | test top-1 | test after fine-tune |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, x in result["runs"].items():
            if ARMS[name][2] == part:
                ft = x["finetune"] or {}
                print(f"| {name[2:]} | {x['evaluations']} | {x['achieved']['size_ratio']:.3f} | "
                      f"{x['achieved']['bitops_ratio']:.4f} | {x['achieved']['macs_ratio']:.3f} | {x['best_val']:.2f} | "
                      f"{_f(ft.get('test_before'))} | {_after(ft)} |")
    return result


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _after(ft: dict) -> str:
    """The test top-1 after fine-tuning: one seed's, or the seeds' mean ± std and each."""
    vals = [v for v in ft.get("test_after_seeds") or [ft.get("test_after")] if v is not None]
    if len(vals) < 2:
        return _f(vals[0] if vals else None)
    return f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f} ({' / '.join(f'{v:.2f}' for v in vals)})"


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/quant", result="quant.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
