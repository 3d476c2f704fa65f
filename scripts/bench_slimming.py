#!/usr/bin/env python
"""Network slimming benchmark (Liu et al., ICCV 2017): train with and without the L1 penalty on the
norm scales, prune both by ``bn_scale`` to the same budget, fine-tune both alike, compare top-1.

Per arm (``none``: lambda 0, ``slimming``: ``--lam``), in ``--out/<arm>/``:

1. ``train/``: ``amc.training.train`` from scratch (per-epoch ``last.pt``: a killed run resumes);
2. ``search/``: the pruning policy at ``--target`` (``macs=``), channels ranked by ``bn_scale``: with
   ``--prune threshold`` (default) one global threshold on ``|gamma|`` as the paper prunes
   (:func:`amc.slimming.threshold_policy`); with ``--prune uniform`` the ``uniform`` agent's same keep
   ratio for every group (it bisects on the budget only, so the scoring proxy does not matter);
3. ``ft/``: ``amc.finetune.finetune_policy`` (labels only, no KD, so that both arms are trained alike);

and ``--out/slimming.json``: per arm the uncompressed test top-1, the pruned top-1 before and after
fine-tuning, and the norm-scale statistics (mean ``|gamma|``, fraction below 1e-2). Every step is
skipped when its output exists, so rerunning the command continues where it stopped.

CIFAR-10 ResNet-20 (the measurement of issue 20; hours on one CPU core)::

    python scripts/bench_slimming.py --model resnet20 --dataset cifar10 --data-dir data/cifar10 \
        --epochs 160 --lr 0.1 --lam 1e-5 --target macs=0.5 --ft-epochs 40 --threads 4 --out bench_out/slimming-r20

The cheaper variant, sparsity training from the trained reference (``--init``; both arms start from its
weights), one arm per core. The L1 subgradient moves every scale by ``lr * lambda`` per step, so what matters is
``lambda`` times the summed learning rate: the paper's ResNet run (lambda 1e-5, lr 0.1 stepped down over 160
epochs of 391 steps) moves a scale by about 0.03 in all; 8 epochs of 352 steps at lr 0.01, cosine (a summed
lr of about 14), need lambda 2.5e-3 for the same pull::

    python scripts/bench_slimming.py --model resnet20 --dataset cifar10 --data-dir data \
        --init reference/resnet20-cifar10.pt --epochs 8 --lr 0.01 --lam 2.5e-3 --target macs=0.5 \
        --ft-epochs 8 --precision bf16 --channels-last --threads 1 --arms none \
        --out bench_out/slimming-r20-init   # and --arms slimming

A small run (Fashion-MNIST, LeNet-5 has no norm layers: use ``vgg11`` or ``resnet20``)::

    python scripts/bench_slimming.py --model resnet20 --dataset fashion-mnist --data-dir DIR \
        --epochs 3 --lam 1e-4 --target macs=0.5 --ft-epochs 1 --threads 1 --out bench_out/slimming-fmnist
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amc.errors import AmcError
from amc.utils import atomic_write_json
from benchmarks.harness import Experiment


def _train(args: argparse.Namespace, lam: float, run_dir: Path) -> Path:
    from amc.data import get_dataset
    from amc.models import ModelSpec, build_model
    from amc.training import TrainConfig, load_checkpoint, train
    from amc.utils import seed_everything

    final = run_dir / "final.pt"
    if final.is_file():
        return final
    splits = get_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    spec = ModelSpec.for_data(args.model, splits)
    seed_everything(args.seed)  # both arms start from the same weights
    model = build_model(spec)
    if args.init:  # sparsity training from a trained model instead of from scratch
        model.load_state_dict(load_checkpoint(args.init)[0].state_dict())
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.wd, batch_size=args.batch_size,
                      steps_per_epoch=args.steps_per_epoch, seed=args.seed, device=args.device,
                      num_threads=args.threads, precision=args.precision, channels_last=args.channels_last,
                      slimming=lam)
    train(model, splits, cfg, run_dir=run_dir, resume=True, progress=False, model_spec=spec,
          extra_meta={"command": "scripts/bench_slimming.py"})
    return final


def _prune_policy(args: argparse.Namespace, checkpoint: Path, run_dir: Path) -> Path:
    best = run_dir / "best_policy.json"
    if args.prune == "threshold":  # the paper's global threshold on |gamma|
        from amc.models import example_input, resolve_spec
        from amc.slimming import threshold_policy
        from amc.training import load_checkpoint

        if not best.is_file():
            model, ckpt = load_checkpoint(checkpoint)
            spec = resolve_spec(ckpt["model_spec"])
            metric, _, ratio = args.target.partition("=")
            if metric != "macs":
                raise AmcError(f"--prune threshold needs a macs= target, got {args.target!r}")
            threshold_policy(model, example_input(spec), macs_ratio=float(ratio),
                             model_spec=spec.to_dict()).save(best)
        return best
    from agents.search import SearchConfig, run_search

    summary = run_dir / "summary.json"
    if best.is_file() and summary.is_file() and not json.loads(summary.read_text()).get("interrupted"):
        return best
    run_search(SearchConfig(checkpoint=str(checkpoint), dataset=args.dataset, data_dir=args.data_dir,
                            data_seed=args.seed, mode="prune", target=args.target, importance="bn_scale",
                            proxy="vanilla", agent="uniform", episodes=12, warmup=0, seed=args.seed, device=args.device,
                            threads=args.threads, run_dir=str(run_dir), resume=run_dir.exists()))
    return best


def _finetune(args: argparse.Namespace, policy: Path, checkpoint: Path, run_dir: Path) -> dict:
    from amc.finetune import FinetuneConfig, finetune_policy, prepare

    done = run_dir / "finetune_summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    setup = prepare(policy, checkpoint=checkpoint, dataset=args.dataset, data_dir=args.data_dir,
                    data_seed=args.seed, device=args.device)
    cfg = FinetuneConfig(epochs=args.ft_epochs, lr=args.ft_lr, kd=False, weight_decay=args.wd,
                         steps_per_epoch=args.steps_per_epoch, seed=args.seed, device=args.device,
                         num_threads=args.threads, precision=args.precision, channels_last=args.channels_last)
    return finetune_policy(setup, cfg, run_dir=run_dir, resume=True).summary


def _scales(checkpoint: Path) -> dict[str, float]:
    from amc.slimming import scale_values
    from amc.training import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    s = scale_values(model)
    return {"test_top1": ckpt["metrics"].get("test_top1"), "scale_mean": float(s.mean()) if s.numel() else None,
            "scale_below_1e-2": float((s < 1e-2).float().mean()) if s.numel() else None}


def _previous(path: Path, args: argparse.Namespace) -> dict:
    """The result file's arms so far (another process may have written one), or a fresh result."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    arms = old.get("arms", {}) if old.get("args", {}).get("init") == args.init else {}
    return {"args": {k: v for k, v in vars(args).items() if k not in ("arms", "out")}, "arms": arms}


def arguments(ap) -> None:
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir")
    ap.add_argument("--epochs", type=int, default=160, help="training epochs per arm")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lam", type=float, default=1e-5, help="slimming lambda of the second arm (paper: 1e-5 ResNet)")
    ap.add_argument("--target", default="macs=0.5")
    ap.add_argument("--prune", choices=("threshold", "uniform"), default="threshold",
                    help="threshold: one global |gamma| threshold (the paper); uniform: the uniform agent's keep "
                    "ratio per group, channels ranked by bn_scale")
    ap.add_argument("--ft-epochs", type=int, default=40)
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--steps-per-epoch", type=int, help="cap steps per epoch (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="training and fine-tuning precision (bf16: about 2x faster on CPUs with AMX)")
    ap.add_argument("--channels-last", action="store_true", help="train and fine-tune in channels-last layout")
    ap.add_argument("--init", help="train both arms from this checkpoint's weights (same model) instead of from "
                    "scratch: the cheaper sparsity-training variant; use a smaller --lr, e.g. 0.01")
    ap.add_argument("--arms", nargs="+", choices=("none", "slimming"), default=["none", "slimming"],
                    help="run only these arms (one per process on a multi-core machine; same --out)")


def body(args) -> dict:
    out = args.out
    if args.lam <= 0:
        raise AmcError(f"--lam must be > 0 (the slimming arm's lambda), got {args.lam}")
    for arm, lam in (("none", 0.0), ("slimming", args.lam)):
        if arm not in args.arms:
            continue
        ckpt = _train(args, lam, out / arm / "train")
        policy = _prune_policy(args, ckpt, out / arm / "search")
        ft = _finetune(args, policy, ckpt, out / arm / "ft")
        result = _previous(out / "slimming.json", args)  # read now: another process may have written its arm
        result["arms"][arm] = {"lambda": lam, **_scales(ckpt), "pruned_test_top1": ft["before"]["test_top1"],
                               "finetuned_test_top1": ft["after"]["test_top1"],
                               "macs_ratio": ft["costs"]["cost_model"].get("macs_ratio")}
        atomic_write_json(out / "slimming.json", result)  # an arm's result survives a stop in the next one
        print(f"{arm:<9} lambda {lam:g}: test top-1 {result['arms'][arm]['test_top1']}, pruned "
              f"{result['arms'][arm]['pruned_test_top1']}, fine-tuned {result['arms'][arm]['finetuned_test_top1']}, "
              f"mean |gamma| {result['arms'][arm]['scale_mean']}", flush=True)
    return result


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/slimming", result="slimming.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
