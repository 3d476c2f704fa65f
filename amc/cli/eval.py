"""``amc eval``: print the top-1 accuracy of a checkpoint on a dataset split.

The dataset, data directory, val size and seed default to those recorded in the checkpoint, so
``amc eval --checkpoint runs/r20/final.pt`` evaluates on the split the model was trained with.
"""

from __future__ import annotations

import argparse

from amc.cli.apply import count_or_fraction
from amc.errors import AmcError


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="an amc checkpoint (.pt) written by amc train/finetune")
    p.add_argument("--dataset", help="digits, fashion-mnist, cifar10, imagefolder (default: the checkpoint's)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: the checkpoint's)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="split (default test)")
    p.add_argument("--val-size", type=count_or_fraction, help="val holdout (default: the checkpoint's)")
    p.add_argument("--seed", type=int, help="seed of the val holdout (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=1000, help="evaluation batch size (default 1000)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    import torch

    from amc.data import get_dataset
    from amc.training import evaluate, load_checkpoint
    from amc.utils import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device=device)
    info = ckpt.get("data") or {}
    dataset = args.dataset or info.get("dataset")
    if not dataset:
        raise AmcError(f"{args.checkpoint} does not record its dataset; pass --dataset")
    same = dataset == info.get("dataset")
    data_dir = args.data_dir or (info.get("data_dir") if same and dataset != "digits" else None)
    val_size = args.val_size if args.val_size is not None else (info.get("val_size") if same else None)
    seed = args.seed if args.seed is not None else int(info.get("seed", 0) if same else 0)
    spec = ckpt.get("model_spec") or {}
    image_size = spec.get("image_size")
    try:
        splits = get_dataset(dataset, data_dir=data_dir, val_size=val_size, seed=seed,
                             image_size=tuple(image_size) if dataset == "imagefolder" and image_size else None)
    except ValueError as e:  # unknown dataset name: the registry lists the valid ones
        raise e if isinstance(e, AmcError) else AmcError(str(e)) from None
    if spec and (spec.get("num_classes") != splits.num_classes or spec.get("in_channels") != splits.in_channels):
        raise AmcError(f"the model expects {spec.get('in_channels')}-channel images and {spec.get('num_classes')} "
                       f"classes; {dataset} has {splits.in_channels} and {splits.num_classes}")
    data = splits.split(args.split)
    if len(data) == 0:
        raise AmcError(f"the {args.split} split is empty")
    acc = evaluate(model, splits.loader(args.split, batch_size=args.batch_size, device=device), device=device)
    print(f"top-1 {acc:.2f}% on {dataset} {args.split} ({len(data)} images)  checkpoint {args.checkpoint}")
    return 0
