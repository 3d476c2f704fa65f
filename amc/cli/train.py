"""``amc train``: train a model on a dataset; checkpoints, TensorBoard and ``--resume``.

Example::

    amc train --model resnet20 --dataset cifar10 --data-dir data --epochs 40 --run-dir runs/r20

Options may also come from ``--config FILE.yaml`` (flat keys named like the options, e.g.
``model: resnet20``, ``batch_size: 128``, ``model_kwargs: {width_mult: 0.5}``); the command line
overrides the file.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from amc.cli._args import PRECISION_CHOICES, count_or_fraction
from amc.config import load_yaml
from amc.errors import AmcError

# option dest -> default (None: required or library default)
_DEFAULTS: dict[str, Any] = {
    "model": None,
    "model_kwargs": None,
    "dataset": None,
    "data_dir": None,
    "val_size": None,
    "image_size": None,
    "epochs": None,  # None: DEFAULT_EPOCHS, or more on a tiny dataset (MIN_STEPS)
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "wd": 5e-4,
    "label_smoothing": 0.0,
    "warmup_epochs": 0.0,
    "seed": 0,
    "device": "auto",
    "threads": None,
    "precision": "fp32",
    "channels_last": False,
    "no_augment": False,
    "cutout": 0,
    "run_dir": None,
    "resume": False,
    "overwrite": False,
    "teacher": None,
    "init": None,
    "kd_temperature": 4.0,
    "kd_alpha": 0.9,
    "slimming": 0.0,
}
#: epochs when --epochs is not given ...
DEFAULT_EPOCHS = 10
#: ... raised on a tiny dataset until the run makes this many optimisation steps (digits: 9 steps per
#: epoch, so 10 epochs are 90 steps and LeNet-5 stops at ~65%; 1500 steps reach ~97% in seconds)
MIN_STEPS = 1500
_ALIASES = {"weight_decay": "wd", "num_threads": "threads", "model_args": "model_kwargs"}


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="YAML", help="options from a YAML file (the command line overrides it)")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="a built-in model (resnet20, vgg11, lenet5, ...), torchvision:<name> or "
                   "package.module:factory")
    g.add_argument("--model-arg", dest="model_args", action="append", metavar="KEY=VALUE",
                   help="extra model keyword argument (YAML value), repeatable, e.g. width_mult=0.5")
    g.add_argument("--dataset", help="digits, fashion-mnist, cifar10 or imagefolder")
    g.add_argument("--data-dir", help="where the dataset's files are")
    g.add_argument("--val-size", type=count_or_fraction, help="images held out from train for validation "
                   "(count or fraction; default per dataset, e.g. 5000 for cifar10)")
    g.add_argument("--image-size", type=_size, help="resize images to H or H,W (imagefolder)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=f"epochs (default {DEFAULT_EPOCHS}, or as many as make {MIN_STEPS} "
                   "steps on a small dataset such as digits)")
    g.add_argument("--batch-size", type=int, help="batch size (per process under torchrun; default 128)")
    g.add_argument("--lr", type=float, help="peak learning rate, cosine decay (default 0.1)")
    g.add_argument("--momentum", type=float, help="SGD Nesterov momentum (default 0.9)")
    g.add_argument("--wd", "--weight-decay", dest="wd", type=float, help="weight decay (default 5e-4)")
    g.add_argument("--label-smoothing", type=float, help="label smoothing (default 0)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up epochs (default 0)")
    g.add_argument("--no-augment", action="store_true", default=None, help="no random crop/flip")
    g.add_argument("--cutout", type=int, metavar="PX", help="mask a random PX x PX square of each train image "
                   "(Cutout; 16 for CIFAR-10; default 0: off)")
    g.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (same model) instead of "
                   "a random initialisation, e.g. to continue a finished run with a new schedule or a teacher")
    g.add_argument("--teacher", metavar="CKPT", help="distil from this checkpoint (Hinton KD)")
    g.add_argument("--kd-temperature", type=float, help="KD temperature T (default 4)")
    g.add_argument("--kd-alpha", type=float, help="weight of the KD term in [0, 1] (default 0.9)")
    g.add_argument("--slimming", type=float, metavar="LAMBDA",
                   help="network slimming (Liu et al. 2017): add LAMBDA * sum|gamma| over the norm layers' scales to "
                   "the loss (1e-4 VGG, 1e-5 ResNet in the paper; default 0: off); logs their histogram to "
                   "TensorBoard. Prune afterwards with --importance bn_scale")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help="seed (default 0)")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N, mps (default auto)")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--precision", choices=PRECISION_CHOICES,
                   help="fp32, or mixed precision: bf16 (CPUs with AVX-512 BF16/AMX, recent GPUs) or fp16 (CUDA) "
                   "(default fp32)")
    g.add_argument("--channels-last", action="store_true", default=None,
                   help="train in the NHWC memory format (faster conv kernels on CPU and GPU)")
    g.add_argument("--run-dir", help="output folder (default runs/<model>-<dataset>)")
    g.add_argument("--resume", action="store_true", default=None, help="continue from <run-dir>/last.pt")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="start again in a run dir that holds a training run (its checkpoints and curves are deleted)")


def _size(s: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in str(s).replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H or H,W, got {s!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected H or H,W, got {s!r}")
    return parts[0], parts[1]


def _parse_model_args(items: Any) -> dict[str, Any]:
    import yaml

    if items is None:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise AmcError(f"--model-arg expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the YAML ``--config``, then the command line."""
    opts = dict(_DEFAULTS)
    if getattr(args, "config", None):
        path = Path(args.config)
        doc = load_yaml(path)
        for key, value in doc.items():
            k = _ALIASES.get(str(key).replace("-", "_"), str(key).replace("-", "_"))
            if k not in opts:
                raise AmcError(f"{path}: unknown option {key!r}; valid: {', '.join(sorted(opts))}")
            opts[k] = value
    for k in opts:
        v = getattr(args, k, None)
        if v is not None:
            opts[k] = v
    opts["model_kwargs"] = {**_parse_model_args(opts["model_kwargs"]),
                            **_parse_model_args(getattr(args, "model_args", None))}
    if opts["image_size"] is not None and not isinstance(opts["image_size"], tuple):
        opts["image_size"] = _size(opts["image_size"]) if isinstance(opts["image_size"], (str, int)) else tuple(
            opts["image_size"])
    for req in ("model", "dataset"):
        if not opts[req]:
            raise AmcError(f"--{req} is required (or set '{req}:' in --config)")
    if not opts["run_dir"]:
        safe = str(opts["model"]).replace(":", "_").replace("/", "_")
        opts["run_dir"] = str(Path("runs") / f"{safe}-{opts['dataset']}")
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


def check_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start over a run dir that holds a training run, unless ``overwrite`` (which clears it)."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise AmcError("--resume and --overwrite exclude each other: --resume continues the run, --overwrite "
                       "starts it again")
    if run_dir.exists() and not run_dir.is_dir():
        raise AmcError(f"run dir {str(run_dir)!r} exists and is not a directory; choose another --run-dir")
    found = [n for n in _RUN_FILES if (run_dir / n).is_file()]
    if not found or resume:
        return
    if not overwrite:
        raise AmcError(f"run dir {str(run_dir)!r} already holds a training run ({', '.join(found)}); pass --resume "
                       "to continue it, --overwrite to start it again, or choose another --run-dir")


def _clear_run_dir(run_dir: Path) -> None:
    for name in (*_RUN_FILES, "config.json"):
        (run_dir / name).unlink(missing_ok=True)
    for f in run_dir.glob("events.out.tfevents.*"):  # the old curves would mix with the new ones
        f.unlink()


def run(args: argparse.Namespace) -> int:
    from amc.data import get_dataset
    from amc.models import ModelSpec

    opts = resolve_options(args)
    check_run_dir(opts["run_dir"], resume=bool(opts["resume"]), overwrite=bool(opts["overwrite"]))
    if opts["threads"] is not None:
        import torch

        torch.set_num_threads(int(opts["threads"]))  # before the data is decoded
    try:  # registries raise a plain ValueError listing the valid names: make it a one-line error
        ModelSpec(opts["model"])
        splits = get_dataset(opts["dataset"], data_dir=opts["data_dir"], val_size=opts["val_size"],
                             seed=int(opts["seed"]), image_size=opts["image_size"])
        spec = ModelSpec.for_data(opts["model"], splits, kwargs=opts["model_kwargs"])
    except AmcError:
        raise
    except ValueError as e:
        raise AmcError(str(e)) from None
    if opts["epochs"] is None:
        opts["epochs"] = default_epochs(len(splits.train), int(opts["batch_size"]),
                                        int(os.environ.get("WORLD_SIZE", "1")))
        if opts["epochs"] > DEFAULT_EPOCHS and int(os.environ.get("RANK", "0")) == 0:
            print(f"{len(splits.train)} train images: {opts['epochs']} epochs (at least {MIN_STEPS} steps; "
                  "--epochs sets another number)", flush=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return _run(opts, splits, spec)
    from amc.rundir import locked_run_dir

    with locked_run_dir(opts["run_dir"], command="amc train"):  # one process per run dir; the OS drops it on exit
        check_run_dir(opts["run_dir"], resume=bool(opts["resume"]), overwrite=bool(opts["overwrite"]))
        if opts["overwrite"]:
            _clear_run_dir(Path(opts["run_dir"]))
        return _run(opts, splits, spec)


def _run(opts: dict[str, Any], splits: Any, spec: Any) -> int:
    from amc.models import build_model
    from amc.training import TrainConfig, load_checkpoint, train
    from amc.utils import seed_everything

    cfg = TrainConfig(
        epochs=int(opts["epochs"]), batch_size=int(opts["batch_size"]), lr=float(opts["lr"]),
        momentum=float(opts["momentum"]), nesterov=float(opts["momentum"]) > 0, weight_decay=float(opts["wd"]),
        label_smoothing=float(opts["label_smoothing"]), warmup_epochs=float(opts["warmup_epochs"]),
        augment=not opts["no_augment"], cutout=int(opts["cutout"]), seed=int(opts["seed"]), device=str(opts["device"]),
        num_threads=opts["threads"], precision=str(opts["precision"]), channels_last=bool(opts["channels_last"]),
        slimming=float(opts["slimming"]),
    )
    seed_everything(cfg.seed)  # the initial weights depend on --seed only
    model = build_model(spec)
    meta: dict[str, Any] = {"command": "amc train"}
    if opts["init"]:
        meta["init"] = _load_init(model, opts["init"])
    teacher = None
    if opts["teacher"]:
        teacher, t_ckpt = load_checkpoint(opts["teacher"])
        meta["teacher"] = _provenance(opts["teacher"], t_ckpt)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{splits.summary()}; model {spec.name} -> {opts['run_dir']}", flush=True)
    try:
        result = train(
            model, splits, cfg, run_dir=opts["run_dir"], teacher=teacher, kd_temperature=float(opts["kd_temperature"]),
            kd_alpha=float(opts["kd_alpha"]), resume=bool(opts["resume"]), progress=True, model_spec=spec,
            extra_meta=meta,
        )
    except AmcError as e:
        last = str(Path(opts["run_dir"]) / "last.pt")
        if opts["resume"] and last in str(e) and "--overwrite" not in str(e):  # a corrupt or foreign last.pt
            raise AmcError(f"{e}; pass --overwrite instead of --resume to start the run again, or choose another "
                           "--run-dir") from None
        raise
    if not result:  # a torchrun rank other than 0
        return 0
    val = "-" if result["val_top1"] is None else f"{result['val_top1']:.2f}%"
    test = "-" if result["test_top1"] is None else f"{result['test_top1']:.2f}%"
    print(f"val top-1 {val}  test top-1 {test}  "
          f"({result['train_time_s']:.0f}s, {result['epochs']} epochs)  checkpoint {result['checkpoint']}")
    return 0
