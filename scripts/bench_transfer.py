#!/usr/bin/env python
"""Transfer a policy searched on ResNet-20 to ResNet-32, against the uniform policy at the same budget.

No CIFAR-10 ResNet checkpoints exist on the development machine, so this runs on the 8x8 ``digits``
(scikit-learn, in the package): ResNet-20 and ResNet-32 are trained on it for ``--train-epochs``
(or taken from ``--r20``/``--r32``), a DDPG search (``agents.search.run_search``, AMC's ``acc``
reward, ``--target`` MACs budget) runs on ResNet-20, and its best policy is mapped onto ResNet-32 by
``amc.transfer.transfer_policy`` (relative depth within stages, budget re-enforced), exactly as
``amc apply --transfer`` does. Reported: val/test top-1 **before fine-tuning** of

* ResNet-20: searched policy vs uniform (the search's gain on its own model),
* ResNet-32: transferred policy vs uniform (does the policy carry over?),

each at the same budget. Everything goes to ``OUT/``; the table is printed and written to
``OUT/bench_transfer.json``.

    python scripts/bench_transfer.py --reconstruct     # ~4 min on one thread (trains both ResNets first)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from benchmarks.harness import Experiment, search_once


def arguments(p) -> None:
    p.add_argument("--r20", help="trained ResNet-20 checkpoint on digits (default: train one into OUT)")
    p.add_argument("--r32", help="trained ResNet-32 checkpoint on digits (default: train one into OUT)")
    p.add_argument("--train-epochs", type=int, default=15, help="epochs when training the ResNets (default 15)")
    p.add_argument("--target", default="macs=0.5", help="budget (default macs=0.5)")
    p.add_argument("--episodes", type=int, default=150, help="DDPG episodes on ResNet-20 (default 150)")
    p.add_argument("--warmup", type=int, default=50, help="random warm-up episodes (default 50)")
    p.add_argument("--reconstruct", action="store_true", help="AMC's least-squares reconstruction (all policies)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="search seeds (default 0 1 2)")


def _trained(name: str, given: str | None, out: Path, epochs: int, splits) -> str:
    """A digits checkpoint of ``name``: the given one, an earlier run's, or trained now."""
    if given:
        return given
    run = out / f"train-{name}"
    if (run / "final.pt").is_file():
        return str(run / "final.pt")
    import torch

    from amc.models import ModelSpec, build_model
    from amc.training import TrainConfig, train

    spec = ModelSpec.for_data(name, splits)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    res = train(build_model(spec), splits, TrainConfig(epochs=epochs, lr=0.1, batch_size=64, device="cpu",
                                                      num_threads=torch.get_num_threads()),
                run_dir=run, model_spec=spec)
    print(f"trained {name}: val {res['val_top1']:.2f} test {res['test_top1']:.2f} ({time.perf_counter() - t0:.0f}s)",
          flush=True)
    return res["checkpoint"]


def _measure(setup, label: str) -> dict:
    model = setup.compress()
    pol = setup.policy
    row = {"policy": label, "val_top1": setup.evaluate(model, "val"), "test_top1": setup.evaluate(model, "test"),
           "macs_ratio": pol.achieved.get("macs_ratio"), "keep": [round(g.keep_ratio, 3) for g in pol.groups]}
    if setup.transferred and "transfer" in pol.search:
        row["transfer"] = {k: pol.search["transfer"].get(k) for k in ("method", "stages", "multiplier", "budget")}
        row["macs_ratio"] = pol.search["transfer"]["achieved"]["macs_ratio"]
    return row


def body(args) -> dict:
    from amc.data import get_dataset
    from amc.finetune import prepare
    from amc.models import example_input
    from amc.policy import Scoring
    from amc.training import load_checkpoint
    from amc.transfer import uniform_policy

    out = args.out
    splits = get_dataset("digits", seed=0)
    ckpts = {"resnet20": _trained("resnet20", args.r20, out, args.train_epochs, splits),
             "resnet32": _trained("resnet32", args.r32, out, args.train_epochs, splits)}

    searches = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        search_dir = out / f"search-r20-s{seed}"
        search_once(search_dir, checkpoint=ckpts["resnet20"], dataset="digits", target=args.target, agent="ddpg",
                    episodes=args.episodes, warmup=args.warmup, seed=seed, reconstruct=args.reconstruct,
                    device="cpu", threads=args.threads)
        searches[seed] = search_dir / "best_policy.json"
        print(f"seed {seed}: searched ResNet-20 for {args.episodes} episodes in {time.perf_counter() - t0:.0f}s",
              flush=True)

    rows = {}
    for name in ("resnet20", "resnet32"):
        model, ck = load_checkpoint(ckpts[name])
        spec = ck["model_spec"]
        uni = uniform_policy(model, example_input(spec), args.target, model_spec=spec)
        uni.scoring = Scoring(proxy="reconstruct" if args.reconstruct else "vanilla", calibration_seed=0)
        kw = {"checkpoint": ckpts[name], "dataset": "digits", "device": "cpu"}
        base = prepare(uni, **kw)
        label = "searched on resnet20" + (" -> transferred" if name == "resnet32" else "")
        # searched on resnet20 (applied by name: the same model), mapped by depth onto resnet32
        searched = [{"seed": seed, **_measure(prepare(best, **kw), f"{label} (seed {seed})")}
                    for seed, best in searches.items()]
        rows[name] = {
            "uncompressed": {"val_top1": base.evaluate(base.base_model, "val"),
                             "test_top1": base.evaluate(base.base_model, "test")},
            "uniform": _measure(base, f"uniform {args.target}"),
            "searched": searched,
            "searched_mean": {k: statistics.mean(r[k] for r in searched) for k in ("val_top1", "test_top1",
                                                                                   "macs_ratio")},
        }
    summary = {"dataset": "digits 1x8x8 (train 1137 / val 300 / test 360)", "target": args.target,
               "episodes": args.episodes, "warmup": args.warmup, "seeds": args.seeds,
               "reconstruct": args.reconstruct, "checkpoints": ckpts, "models": rows}

    print(f"\naccuracy before fine-tuning at {args.target}, reconstruction {'on' if args.reconstruct else 'off'} "
          "(digits; val 300 / test 360 images)")
    print(f"{'model':<9} {'policy':<46} {'MACs':>6} {'val top-1':>10} {'test top-1':>11}")
    for name, r in rows.items():
        u = r["uncompressed"]
        print(f"{name:<9} {'uncompressed':<46} {1.0:>6.3f} {u['val_top1']:>10.2f} {u['test_top1']:>11.2f}")
        for row in [r["uniform"], *r["searched"], {"policy": f"searched, mean of {len(args.seeds)} seeds",
                                                   **r["searched_mean"]}]:
            print(f"{name:<9} {row['policy']:<46} {row['macs_ratio']:>6.3f} {row['val_top1']:>10.2f} "
                  f"{row['test_top1']:>11.2f}")
    return summary


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/transfer", result="bench_transfer.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
