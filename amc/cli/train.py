"""``amc train``: train a model on a dataset; checkpoints, TensorBoard and ``--resume``.

Example::

    amc train --model resnet20 --dataset cifar10 --data-dir data --epochs 40 --run-dir runs/r20

Every option of :class:`amc.config.train.TrainCommandOptions` is an option here: the everyday ones by
a short name (``--epochs``, ``--wd``), the rest by their dotted path (``--train.eval-batch-size``; the
one-level names such as ``--eval-batch-size`` work too). Options may also come from ``--config
FILE.yaml`` (flat keys named like the options, e.g. ``model: resnet20``, ``batch_size: 128``,
``model_kwargs: {width_mult: 0.5}``, or the nested sections ``--print-config`` prints); the command
line overrides the file.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from pathlib import Path
from typing import Any

from amc.cli.apply import fmt_acc
from amc.config import add_config_arguments, dump_config, load_yaml, nest_flat_keys, resolve_config
from amc.config.train import TrainCommandOptions
from amc.errors import AmcError

#: epochs when --epochs is not given ...
DEFAULT_EPOCHS = 10
#: ... raised on a tiny dataset until the run makes this many optimisation steps (digits: 9 steps per
#: epoch, so 10 epochs are 90 steps and LeNet-5 stops at ~65%; 1500 steps reach ~97% in seconds)
MIN_STEPS = 1500
#: older config-file keys -> the options' names
_ALIASES = {"wd": "weight_decay", "threads": "num_threads", "model_args": "model_kwargs"}


def add_parser(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, TrainCommandOptions, sections={"data": "model and data", "train": "optimisation",
                                                           "distill": "distillation"},
                         config="options from a YAML file (the command line overrides it)")


def resolve_options(args: argparse.Namespace) -> Any:
    """The :class:`TrainCommandOptions`: defaults, then the YAML ``--config``, then the command line."""
    data: dict[str, Any] = {}
    if args.config:
        for key, value in load_yaml(args.config).items():
            key = str(key).replace("-", "_")
            key = _ALIASES.get(key, key)
            if key == "no_augment":
                key, value = "augment", not value
            data[key] = value
    data = nest_flat_keys(TrainCommandOptions, data)
    given = dict(vars(args))  # resolve_config takes the options' dotted paths from it
    if "data.model_kwargs" in given:  # --model-arg adds to the file's model_kwargs
        file_kwargs = data.get("data", {}).get("model_kwargs") or {}
        given["data.model_kwargs"] = {**file_kwargs, **dict(given["data.model_kwargs"])}
    opts = resolve_config(TrainCommandOptions, given, config=data, what=str(args.config or "train config"))
    if not opts.run.run_dir:
        safe = str(opts.data.model).replace(":", "_").replace("/", "_")
        opts.run.run_dir = str(Path("runs") / f"{safe}-{opts.data.dataset}")
    return opts


def _provenance(path: str, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What identifies a checkpoint another run started from: the path may be renamed later, the bytes'
    hash, model and accuracy stay."""
    from amc.utils import file_sha256

    return {"path": str(path), "sha256": file_sha256(path), "model": (ckpt.get("model_spec") or {}).get("name"),
            "test_top1": (ckpt.get("metrics") or {}).get("test_top1")}


def _load_init(model: Any, path: str) -> dict[str, Any]:
    """Copy ``path``'s weights into ``model`` (strictly); return their provenance for the checkpoint."""
    from amc.training import load_checkpoint

    init, ckpt = load_checkpoint(path)
    try:
        model.load_state_dict(init.state_dict(), strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).strip().splitlines()[:2])[:300]
        raise AmcError(
            f"--init {path}: its weights ({(ckpt.get('model_spec') or {}).get('name', 'a stored module')}) do not fit "
            f"the model being trained: {first}. Pass the same --model and --model-arg as that run; a compressed "
            "model is fine-tuned with `amc finetune --model-file`") from None
    return _provenance(path, ckpt)


def default_epochs(n_train: int, batch_size: int, world_size: int = 1) -> int:
    """Epochs when ``--epochs`` is not given: ``DEFAULT_EPOCHS``, or enough for ``MIN_STEPS`` steps."""
    steps = max(1, math.ceil(n_train / max(1, world_size) / max(1, batch_size)))
    return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps))


#: what a training run leaves in its run dir (``amc.training.train``)
_RUN_FILES = ("last.pt", "final.pt")


def check_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool,
                  outputs: tuple[str, ...] = _RUN_FILES, what: str = "run dir",
                  holds: str = "a training run") -> list[Path]:
    """The earlier ``outputs`` (glob patterns) in ``run_dir``; ``AmcError`` when there are some and neither
    ``resume`` nor ``overwrite`` is given."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise AmcError(f"{what} {str(run_dir)!r} exists and is not a directory; choose another --run-dir")
    found = [p for pattern in outputs for p in sorted(run_dir.glob(pattern))]
    if found and not (resume or overwrite):
        names = ", ".join(p.name for p in found[:4])
        raise AmcError(f"{what} {str(run_dir)!r} already holds {holds} ({names}); pass --resume to continue "
                       "it, --overwrite to start it again, or choose another --run-dir")
    return found


def clear_run_dir(run_dir: Path, found: list[Path]) -> None:
    """Delete ``found`` (an earlier run's outputs) and the old TensorBoard curves."""
    for old in [*found, *run_dir.glob("events.out.tfevents.*")]:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    from amc.data import get_dataset
    from amc.models import ModelSpec

    opts = resolve_options(args)
    if args.print_config:
        print(dump_config(opts), end="")
        return 0
    d, t, r = opts.data, opts.train, opts.run
    check_run_dir(r.run_dir, resume=r.resume, overwrite=r.overwrite)
    if t.num_threads is not None:
        import torch

        torch.set_num_threads(t.num_threads)  # before the data is decoded
    try:  # registries raise a plain ValueError listing the valid names: make it a one-line error
        ModelSpec(d.model)
        splits = get_dataset(d.dataset, data_dir=d.data_dir, val_size=d.val_size, seed=t.seed, image_size=d.image_size)
        spec = ModelSpec.for_data(d.model, splits, kwargs=d.model_kwargs)
    except ValueError as e:
        raise e if isinstance(e, AmcError) else AmcError(str(e)) from None
    if t.epochs is None:
        t.epochs = default_epochs(len(splits.train), t.batch_size, int(os.environ.get("WORLD_SIZE", "1")))
        if t.epochs > DEFAULT_EPOCHS and int(os.environ.get("RANK", "0")) == 0:
            print(f"{len(splits.train)} train images: {t.epochs} epochs (at least {MIN_STEPS} steps; "
                  "--epochs sets another number)", flush=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return _run(opts, splits, spec)
    from amc.rundir import locked_run_dir

    with locked_run_dir(r.run_dir, command="amc train"):  # one process per run dir; the OS drops it on exit
        found = check_run_dir(r.run_dir, resume=r.resume, overwrite=r.overwrite)
        if r.overwrite:
            clear_run_dir(Path(r.run_dir), [*found, Path(r.run_dir) / "config.json"])
        return _run(opts, splits, spec)


def _run(opts: Any, splits: Any, spec: Any) -> int:
    from amc.models import build_model
    from amc.training import TrainConfig, load_checkpoint, train
    from amc.utils import seed_everything

    cfg = TrainConfig.from_options(opts.train)
    run_dir, kd = opts.run.run_dir, opts.distill
    seed_everything(cfg.seed)  # the initial weights depend on --seed only
    model = build_model(spec)
    meta: dict[str, Any] = {"command": "amc train"}
    if opts.run.init:
        meta["init"] = _load_init(model, opts.run.init)
    teacher = None
    if kd.teacher:
        teacher, t_ckpt = load_checkpoint(kd.teacher)
        meta["teacher"] = _provenance(kd.teacher, t_ckpt)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{splits.summary()}; model {spec.name} -> {run_dir}", flush=True)
    try:
        result = train(model, splits, cfg, run_dir=run_dir, teacher=teacher, kd_temperature=kd.kd_temperature,
                       kd_alpha=kd.kd_alpha, resume=opts.run.resume, progress=True, model_spec=spec, extra_meta=meta)
    except AmcError as e:
        last = str(Path(run_dir) / "last.pt")
        if opts.run.resume and last in str(e) and "--overwrite" not in str(e):  # a corrupt or foreign last.pt
            raise AmcError(f"{e}; pass --overwrite instead of --resume to start the run again, or choose another "
                           "--run-dir") from None
        raise
    if not result:  # a torchrun rank other than 0
        return 0
    print(f"val top-1 {fmt_acc(result['val_top1'])}  test top-1 {fmt_acc(result['test_top1'])}  "
          f"({result['train_time_s']:.0f}s, {result['epochs']} epochs)  checkpoint {result['checkpoint']}")
    return 0
