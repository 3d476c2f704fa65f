"""``amc finetune``: fine-tune a compressed model with knowledge distillation; exports the result.

Examples::

    amc finetune --policy runs/quickstart/best_policy.json --epochs 5 --run-dir runs/quickstart-ft
    amc finetune --policy best_policy.json --checkpoint runs/r20/final.pt --dataset cifar10 \\
        --data-dir data/cifar10 --epochs 30 --run-dir runs/r20-ft          # KD on, T=4, alpha=0.9
    amc finetune ... --iterative 4      # prune 1/4 of the way, fine-tune, 4 times (epochs per step)
    amc finetune --model-file runs/r20-applied/model.amc --checkpoint runs/r20/final.pt \\
        --dataset cifar10 --data-dir data/cifar10 --epochs 30 --run-dir runs/r20-ft
    amc finetune ... --resume           # continue after Ctrl-C or a kill
    amc finetune --policy dc_policy.json --checkpoint runs/mlp/final.pt --dataset fashion-mnist \
        --data-dir data/fashion-mnist --deep-compression --iterative 3 --epochs 10 --share-epochs 5 \
        --run-dir runs/mlp-dc        # Deep Compression: prune+retrain x3, k-means + centroid FT, Huffman

The compressed model is built as ``amc apply`` builds it (or loaded with ``--model-file``), trained
with SGD + cosine decay, distilling from the uncompressed checkpoint unless ``--no-kd``; quantized
models train through their fake-quant wrappers (QAT, straight-through estimator). Writes the
training run (TensorBoard, ``last.pt``/``final.pt``; ``step*/`` when iterative), ``model.amc``,
``policy.json`` and ``finetune_summary.json`` into ``--run-dir``.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

from amc.cli import train
from amc.cli.apply import add_common, cost_table, fmt_acc, human_bytes, setup_from_args
from amc.config import add_config_arguments, dump_config, resolve_config
from amc.config.train import FinetuneCommandOptions
from amc.errors import AmcError
from amc.rundir import locked_run_dir

SECTIONS = {"": "fine-tuning", "train": "training", "distill": "distillation", "share": "Deep Compression"}


def add_parser(p: argparse.ArgumentParser) -> None:
    add_common(p, policy_required=False, device=False)
    p.add_argument("--model-file", metavar="AMC", help="an already compressed model (apply's/export's model.amc) "
                   "instead of --policy; --checkpoint is then the uncompressed teacher")
    add_config_arguments(p, FinetuneCommandOptions, sections=SECTIONS, defaults={"train.epochs": "required"},
                         config="fine-tuning options from a YAML file (the command line overrides it)")


def resolve_options(args: argparse.Namespace) -> Any:
    """The :class:`FinetuneCommandOptions`: defaults, then ``--config``, then the command line."""
    opts = resolve_config(FinetuneCommandOptions, args, config=args.config,
                          what=str(args.config or "finetune config"))
    args.device, args.threads = opts.train.device, opts.train.num_threads  # what the common options read
    args.run_dir, args.resume, args.overwrite = opts.run.run_dir, opts.run.resume, opts.run.overwrite
    return opts


#: what a fine-tuning run leaves in its run dir (step*/ of an iterative one, prune*/ and share/ of a Deep
#: Compression one)
_OUTPUTS = ("last.pt", "final.pt", "model.amc", "policy.json", "finetune_summary.json", "config.json",
            "deep_compression.json", "step*", "prune*", "share", "stage*.amc")


#: the earlier outputs in a run dir (``AmcError`` when there are some and neither --resume nor --overwrite)
check_run_dir = partial(train.check_run_dir, outputs=_OUTPUTS, what="--run-dir", holds="a fine-tuning run")


def run(args: argparse.Namespace) -> int:
    from amc.finetune import FinetuneConfig, finetune_policy

    opts = resolve_options(args)
    if args.print_config:
        print(dump_config(opts), end="")
        return 0
    if bool(args.policy) == bool(args.model_file):
        raise AmcError("pass either --policy (a policy to apply to --checkpoint) or --model-file (a compressed model)")
    run_dir = Path(args.run_dir)
    check_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
    if opts.share.deep_compression:
        return _run_deep_compression(args, opts, run_dir)
    cfg = FinetuneConfig.from_options(opts)
    student = None
    if args.model_file:
        from amc.export import load_with_metadata
        from amc.policy import Policy

        if args.checkpoint is None:
            raise AmcError("--model-file needs --checkpoint: the uncompressed model (KD teacher and cost reference)")
        student, meta = load_with_metadata(args.model_file, device=args.device)
        if not meta.get("policy"):
            raise AmcError(f"{args.model_file} records no policy; fine-tune it from --policy instead")
        args.policy = Policy.from_dict(meta["policy"])
        args.transfer = False
    setup = setup_from_args(args)
    with locked_run_dir(run_dir, command="amc finetune"):  # one process per run dir; the OS drops it on exit
        _clear(run_dir, args)
        res = finetune_policy(setup, cfg, run_dir=args.run_dir, resume=args.resume, progress=True, student=student)
    s = res.summary
    print(f"fine-tuned {cfg.epochs} epoch(s)" + (f" x {cfg.iterative} steps" if cfg.iterative > 1 else "")
          + (f" with KD (T={cfg.kd_temperature:g}, alpha={cfg.kd_alpha:g})" if cfg.kd else " without KD")
          + f" in {s['time_s']:.0f}s -> {args.run_dir}")
    for line in cost_table(s["costs"]):
        print(line)
    print(f"{'':<12} {'uncompressed':>14} {'before FT':>14} {'after FT':>14}")
    for split in ("val", "test"):
        key = f"{split}_top1"
        print(f"{split + ' top-1':<12} {fmt_acc(s['uncompressed'][key]):>14} {fmt_acc(s['before'][key]):>14} "
              f"{fmt_acc(s['after'][key]):>14}")
    if s.get("model_file"):
        print(f"saved {s['model_file']} ({human_bytes(s['model_file_bytes'])})")
    return 0


def _clear(run_dir: Path, args: argparse.Namespace) -> None:
    """With --overwrite: delete what an earlier run left in ``run_dir``."""
    if args.overwrite:
        train.clear_run_dir(run_dir, check_run_dir(run_dir, resume=args.resume, overwrite=True))


def deep_compression_table(summary: dict) -> list[str]:
    """The paper's table: size after each stage, ratio against float32, test top-1."""
    base = summary["float32_bytes"]
    lines = [f"{'stage':<10} {'file':>10} {'x float32':>10} {'weights':>10} {'x float32 w':>12} {'test top-1':>11}",
             f"{'float32':<10} {human_bytes(base):>10} {'1.0x':>10} {'':>10} {'':>12} {'':>11}"]
    for r in summary["table"]:
        lines.append(f"{r['stage']:<10} {human_bytes(r['file_bytes']):>10} {r['ratio']:>9.1f}x "
                     f"{human_bytes(r['weight_bytes']):>10} {r['weight_ratio']:>11.1f}x {fmt_acc(r['test_top1']):>11}")
    return lines


def _run_deep_compression(args: argparse.Namespace, opts: Any, run_dir: Path) -> int:
    from amc.deep_compression import DeepCompressionConfig, deep_compress

    if args.model_file:
        raise AmcError("--deep-compression starts from --policy and the uncompressed --checkpoint, not --model-file")
    given = {**opts.train.model_dump(), **opts.distill.model_dump(), **opts.share.model_dump(),
             "prune_steps": opts.iterative, "prune_epochs": opts.train.epochs, "prune_lr": opts.train.lr}
    cfg = DeepCompressionConfig(**{name: given[name] for name in DeepCompressionConfig.field_names()})
    setup = setup_from_args(args)
    with locked_run_dir(run_dir, command="amc finetune"):
        _clear(run_dir, args)
        res = deep_compress(setup.base_model, setup.splits, setup.policy, cfg, run_dir=run_dir,
                            model_spec=setup.model_spec, resume=args.resume, progress=True)
    print(f"Deep Compression ({cfg.prune_steps} prune step(s) x {cfg.prune_epochs} epoch(s), "
          f"{cfg.share_epochs} centroid epoch(s)) -> {run_dir}")
    for line in deep_compression_table(res.summary):
        print(line)
    print(f"saved {res.summary['final_file']} and {run_dir / 'deep_compression.json'}")
    return 0
