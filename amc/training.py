"""One training loop for pretraining and fine-tuning, evaluation, and the checkpoint format.

:func:`train` runs SGD (Nesterov momentum) with a per-iteration cosine schedule (optional linear
warm-up), optional label smoothing and optional knowledge distillation from a teacher
(:func:`amc.distillation.kd_loss`). Every epoch it evaluates val top-1, logs TensorBoard scalars
(``train/loss``, ``train/top1``, ``train/lr``, ``eval/top1``, ``time/epoch_s``) into ``run_dir`` and writes
``run_dir/last.pt`` atomically (weights + optimizer + scheduler + epoch + RNG states), so that
``resume=True`` continues after a crash or a kill. At the end it writes ``run_dir/final.pt`` with
val and test top-1 and ``run_dir/metrics.json``.

It runs on any device and under ``torchrun``: when ``WORLD_SIZE > 1`` it joins the process group
(NCCL on CUDA, Gloo on the CPU), wraps the model in ``DistributedDataParallel``, gives every rank its
shard of each epoch (``batch_size`` is per rank) and only rank 0 evaluates and writes files.

Checkpoint format (a ``dict`` saved with ``torch.save``)::

    {"format": "amc-checkpoint", "version": 1,
     "model_spec": {...} | None,      # amc.models.ModelSpec.to_dict(): how to rebuild the model
     "state_dict": {...},             # the weights
     "module": nn.Module,             # ONLY when the weights do not fit the spec (pruned models)
     "config": {...}, "metrics": {"val_top1": ..., "test_top1": ...}, ...extra keys}

A pruned model has other channel counts than ``build_model(model_spec)``; :func:`save_checkpoint`
notices and also stores the whole module (pickled). :func:`load_checkpoint` then has to unpickle
it (``weights_only=False``), which runs code from the file: load such checkpoints only from
sources you trust. Plain checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import os
import pickle
import random
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from amc.config.flat import flat_config
from amc.config.train import TrainOptions
from amc.distillation import DistillationLoss, kd_loss
from amc.errors import AmcError
from amc.models import ModelSpec, build_model, resolve_spec
from amc.slimming import scale_values, slimming_penalty
from amc.utils import atomic_torch_save, atomic_write_json, model_device, resolve_device, seed_everything

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "TrainConfig", "train", "evaluate", "save_checkpoint",
           "load_checkpoint"]

CHECKPOINT_FORMAT = "amc-checkpoint"
CHECKPOINT_VERSION = 1
#: ``TrainConfig.precision`` values -> autocast dtype (None: no autocast)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


#: Hyper-parameters of :func:`train`, flat: one attribute per field of :class:`amc.config.train.TrainOptions`
#: (which owns their defaults, descriptions and checks; a bad value raises ``AmcError``); stored in
#: every checkpoint as ``config``.
TrainConfig = flat_config("TrainConfig", TrainOptions, module=__name__, keys="training options",
                          doc="Hyper-parameters of :func:`train`: the fields of amc.config.train.TrainOptions.")


# --------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1000,
    precision: str = "fp32",
) -> float:
    """Top-1 accuracy in percent (0..100) of ``model`` in eval mode.

    ``data`` is a pair of tensors ``(x (N, ...), y (N,))``, evaluated in chunks of ``batch_size``, or
    any iterable of ``(x, y)`` batches (e.g. ``splits.loader("val", batch_size=...)``). ``device``
    defaults to the model's. ``precision`` ``bf16``/``fp16`` evaluates under autocast. The model's
    train/eval mode is restored afterwards.
    """
    amp = PRECISIONS[precision]
    nhwc = False
    dev = torch.device(device) if device is not None else model_device(model)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x_all, y_all = data
        if amp is not None and x_all.dim() == 4:  # half-precision convs run fastest in NHWC (the env's layout)
            x_all = x_all.contiguous(memory_format=torch.channels_last)
            nhwc = True
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = (
            (x_all[i : i + batch_size], y_all[i : i + batch_size]) for i in range(0, len(y_all), batch_size)
        )
    else:
        batches = data
    was_training = model.training
    model.eval()
    if nhwc:
        model.to(memory_format=torch.channels_last)
    correct, total = 0, 0
    try:
        for x, y in batches:
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                out = model(x.to(dev, non_blocking=True))
            correct += int((out.argmax(1) == y.to(dev)).sum())
            total += int(y.shape[0])
    finally:
        model.train(was_training)
        if nhwc:  # the caller's model comes back in its default layout
            model.to(memory_format=torch.contiguous_format)
    if total == 0:
        raise AmcError("evaluate: no samples (empty split? set a val_size > 0)")
    return 100.0 * correct / total


# --------------------------------------------------------------------------------------------------
# checkpoints


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel) else model


def _fits_spec(model: nn.Module, spec: ModelSpec) -> bool:
    """Whether ``build_model(spec)`` has exactly ``model``'s state_dict keys and shapes."""
    try:
        ref = build_model(spec).state_dict()
    except Exception:  # a spec that cannot be rebuilt here: keep the module
        return False
    own = model.state_dict()
    return ref.keys() == own.keys() and all(
        getattr(ref[k], "shape", None) == getattr(own[k], "shape", None) for k in ref
    )


def _to_plain(obj: Any) -> Any:
    if obj is None:
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise AmcError(f"expected a dataclass or a dict, got {type(obj).__name__}")


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    model_spec: ModelSpec | Mapping[str, Any] | None,
    config: Any = None,
    metrics: Mapping[str, Any] | None = None,
    store_module: bool | None = None,
    **extra: Any,
) -> Path:
    """Write an ``amc-checkpoint`` atomically (see the module docstring) and return its path.

    Args:
        model: the model (a DDP/DataParallel wrapper is unwrapped); saved from the CPU.
        model_spec: how to rebuild the architecture; ``None`` when there is no spec.
        config: the config the model came from (a dataclass with ``to_dict`` or a dict).
        metrics: e.g. ``{"val_top1": 91.2, "test_top1": 90.8}`` (percent).
        store_module: also pickle the whole module. ``None`` (default): only when the weights do not
            fit ``build_model(model_spec)`` (pruned models) or there is no spec.
        **extra: more top-level keys (must be picklable; keep them to plain data).
    """
    model = _unwrap(model)
    spec = resolve_spec(model_spec) if model_spec is not None else None
    if store_module is None:
        store_module = spec is None or not _fits_spec(model, spec)
    # modules with extra state (e.g. quantization wrappers) put plain data next to the tensors
    state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_spec": spec.to_dict() if spec is not None else None,
        "state_dict": state,
        "config": _to_plain(config),
        "metrics": dict(metrics or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if store_module:
        on_cpu = all(t.device.type == "cpu" for t in list(model.parameters()) + list(model.buffers()))
        ckpt["module"] = model if on_cpu else copy.deepcopy(model).cpu()
    for k in extra:
        if k in ckpt:
            raise AmcError(f"save_checkpoint: extra key {k!r} clashes with a standard key")
    ckpt.update(extra)
    return atomic_torch_save(ckpt, path)


def _read_checkpoint(path: Path, device: torch.device | str) -> dict[str, Any]:
    if not path.is_file():
        raise AmcError(f"checkpoint {path} not found; pass the path of a .pt file written by `amc train`")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() and "weights_only" not in str(e):
            raise AmcError(f"cannot read checkpoint {path} (corrupt or not a torch file): {e}") from None
        # a stored nn.Module (pruned model) needs full unpickling: trusted files only
        try:
            ckpt = torch.load(path, map_location=device, weights_only=False)
        except Exception as e2:
            raise AmcError(f"cannot read checkpoint {path} (corrupt or incompatible code): {e2}") from None
    except Exception as e:
        raise AmcError(f"cannot read checkpoint {path} (corrupt or not a torch file): {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise AmcError(f"{path} is not an amc checkpoint (no format={CHECKPOINT_FORMAT!r}); "
                       "write one with `amc train` or amc.training.save_checkpoint")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise AmcError(f"{path} has checkpoint version {ckpt['version']}, newer than this amc "
                       f"({CHECKPOINT_VERSION}); upgrade amc")
    return ckpt


def load_checkpoint(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load an ``amc-checkpoint``: ``(model in eval mode on device, the checkpoint dict)``.

    The model is rebuilt from ``model_spec`` and its ``state_dict`` loaded strictly, or, when the
    checkpoint stores a whole module (pruned models), that module is used with the stored weights.
    Raises ``AmcError`` for a missing, corrupt or foreign file, or weights that do not fit the spec.
    """
    path = Path(path)
    dev = resolve_device(device)
    ckpt = _read_checkpoint(path, dev)
    model = ckpt.get("module")
    if model is None:
        if not ckpt.get("model_spec"):
            raise AmcError(f"{path}: the checkpoint has neither a model_spec nor a stored module")
        try:
            model = build_model(ckpt["model_spec"])
        except ValueError as e:
            raise AmcError(f"{path}: cannot rebuild the model from its spec: {e}") from None
    elif not isinstance(model, nn.Module):
        raise AmcError(f"{path}: the stored 'module' is a {type(model).__name__}, not an nn.Module")
    state = ckpt.get("state_dict")
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise AmcError(
                f"{path}: the weights do not fit the model {ckpt.get('model_spec')}: "
                f"{' '.join(first[:3])[:500]} (was the model pruned? save it with save_checkpoint, "
                "which then stores the whole module)"
            ) from None
    return model.to(dev).eval(), ckpt


# --------------------------------------------------------------------------------------------------
# training


def _dist_setup(device: torch.device) -> tuple[int, int, bool, torch.device]:
    """``(rank, world size, whether this call created the process group, device)`` under ``torchrun``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, False, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), created, device


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    floor = cfg.lr_min / cfg.lr

    def factor(step: int) -> float:  # multiplier of cfg.lr for optimizer step `step` (0-based)
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    try:
        random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        logger.warning("could not restore RNG states (%s); continuing", e)


def train(model: nn.Module, splits: Any, cfg: TrainConfig, *, run_dir: str | os.PathLike,
          teacher: nn.Module | None = None, kd_temperature: float = 4.0, kd_alpha: float = 0.9,
          resume: bool = False, progress: bool = False,
          model_spec: ModelSpec | Mapping[str, Any] | None = None,
          extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` in place on ``splits`` (an :class:`amc.data.DatasetSplits`) and checkpoint it.

    Args:
        model: any ``nn.Module`` (moved to the device; trained in place).
        splits: the dataset; trains on ``train``, reports ``val`` every epoch and ``test`` at the end.
        cfg: the hyper-parameters.
        run_dir: output folder: TensorBoard events, ``last.pt``, ``final.pt``, ``config.json``,
            ``metrics.json``.
        teacher: optional model to distil from (frozen, eval mode): the loss becomes
            ``kd_alpha * T^2 * KL(teacher || student) + (1 - kd_alpha) * CE`` (Hinton et al. 2015).
        kd_temperature: ``T`` of the distillation (> 0).
        kd_alpha: weight of the distillation term in [0, 1] (labels get ``1 - kd_alpha``).
        resume: continue from ``run_dir/last.pt`` when it exists (else start fresh, with a warning).
        progress: show a tqdm bar per epoch.
        model_spec: stored in the checkpoints so that :func:`load_checkpoint` can rebuild the model.
        extra_meta: stored under ``"meta"`` in the checkpoints (e.g. the policy a model came from).

    Returns:
        ``{"val_top1", "test_top1", "epochs", "train_time_s", "epoch_time_s", "checkpoint",
        "history"}`` (accuracies in percent; ``val_top1`` is ``None`` with an empty val split).
    """
    if not isinstance(cfg, TrainConfig):
        raise AmcError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if teacher is not None:
        DistillationLoss(temperature=kd_temperature, alpha=kd_alpha)  # validates T and alpha early
    run_dir = Path(run_dir)
    rank, world_size, created_group, device = _dist_setup(resolve_device(cfg.device))
    main = rank == 0
    if cfg.num_threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    spec = resolve_spec(model_spec) if model_spec is not None else None
    amp_dtype = PRECISIONS[cfg.precision]
    if cfg.precision == "fp16" and device.type != "cuda":
        raise AmcError(f"precision fp16 needs a CUDA device (this run is on {device}); use bf16 on the CPU")
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")  # disabled: a plain backward, step
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    model.to(device, memory_format=memory_format)
    teacher_was_training = teacher.training if teacher is not None else False
    if teacher is not None:  # used under no_grad: its parameters' requires_grad flags are left alone
        teacher.to(device, memory_format=memory_format).eval()

    loader = splits.loader("train", batch_size=cfg.batch_size, shuffle=True, augment=cfg.augment,
                           cutout=cfg.cutout, device=device, drop_last=False, seed=cfg.seed, rank=rank,
                           world_size=world_size)
    steps_per_epoch = len(loader) if cfg.steps_per_epoch is None else min(len(loader), cfg.steps_per_epoch)
    if steps_per_epoch == 0:
        raise AmcError(f"the train split has {len(splits.train)} images: too few for one batch")
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch))
    meta = dict(extra_meta or {})
    kd_meta = {"temperature": kd_temperature, "alpha": kd_alpha} if teacher is not None else None
    config_doc = {**cfg.to_dict(), "distillation": kd_meta}
    data_info = getattr(splits, "info", {})
    save = functools.partial(save_checkpoint, model=model, model_spec=spec, config=config_doc, data=data_info,
                             meta=meta)

    start_epoch, history, train_time = 0, [], 0.0
    last_path, final_path = run_dir / "last.pt", run_dir / "final.pt"
    if resume:
        if last_path.is_file():
            ckpt = _read_checkpoint(last_path, device)
            state = ckpt.get("train_state") or {}
            try:
                _unwrap(model).load_state_dict(ckpt["state_dict"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                if state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
            except (KeyError, RuntimeError, ValueError) as e:
                raise AmcError(f"cannot resume from {last_path}: it does not match this model/config ({e}); "
                               "use a new --run-dir or drop --resume") from None
            start_epoch = int(state.get("epoch", 0))
            history = list(state.get("history", []))
            train_time = float(state.get("train_time_s", 0.0))
            if "rng" in state:
                _set_rng_state(state["rng"])
            logger.info("resumed from %s at epoch %d/%d", last_path, start_epoch, cfg.epochs)
        else:
            logger.warning("--resume: %s does not exist; starting from scratch", last_path)

    writer = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {
            "train": config_doc, "model_spec": spec.to_dict() if spec else None,
            "data": data_info, "meta": meta,
        })
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir))

    net: nn.Module = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    val_data = splits.tensors("val", device=device) if len(splits.val) and main else None
    score = functools.partial(evaluate, batch_size=cfg.eval_batch_size, precision=cfg.eval_precision)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            net.train()
            loader.set_epoch(epoch)
            it: Iterable = loader
            if progress and main:
                from tqdm.auto import tqdm

                it = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                          dynamic_ncols=True)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for step, (x, y) in enumerate(it):
                if step >= steps_per_epoch:
                    break
                if cfg.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = net(x)
                    if teacher is not None:
                        with torch.no_grad():
                            t_out = teacher(x)
                out = out.float()
                if teacher is not None:
                    loss = kd_loss(out, t_out.float(), y, temperature=kd_temperature, alpha=kd_alpha,
                                   label_smoothing=cfg.label_smoothing)
                else:
                    loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
                if cfg.slimming:
                    loss = loss + slimming_penalty(model, cfg.slimming)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += loss.detach() * y.shape[0]
                correct += (out.detach().argmax(1) == y).sum()
                seen += int(y.shape[0])
                if progress and main and step % 20 == 0:
                    it.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{scheduler.get_last_lr()[0]:.4f}")
            if not torch.isfinite(loss_sum):
                raise AmcError(f"training diverged at epoch {epoch + 1} (loss is not finite); lower --lr")
            epoch_time = time.perf_counter() - t0
            train_time += epoch_time
            rec = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, seen),
                   "train_top1": 100.0 * float(correct) / max(1, seen),
                   "lr": float(scheduler.get_last_lr()[0]), "time_s": epoch_time}
            if main:
                rec["val_top1"] = score(model, val_data) if val_data else None
                history.append(rec)
                for tag, key in (("train/loss", "train_loss"), ("train/top1", "train_top1"),
                                 ("train/lr", "lr"), ("time/epoch_s", "time_s"), ("eval/top1", "val_top1")):
                    if rec[key] is not None:
                        writer.add_scalar(tag, rec[key], epoch + 1)
                if cfg.slimming:
                    scales = scale_values(model)
                    if scales.numel():
                        writer.add_histogram("slimming/scales", scales, epoch + 1)
                        writer.add_scalar("slimming/l1", float(scales.sum()), epoch + 1)
                writer.flush()
                train_state = {
                    "epoch": epoch + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(), "history": history, "train_time_s": train_time,
                    "scaler": scaler.state_dict() or None,
                }
                save(last_path, metrics={"val_top1": rec["val_top1"]}, train_state=train_state)
                val_txt = f"{rec['val_top1']:.2f}" if rec["val_top1"] is not None else "-"
                logger.info("epoch %d/%d: loss %.4f, train top-1 %.2f, val top-1 %s, lr %.4g, %.1fs",
                            epoch + 1, cfg.epochs, rec["train_loss"], rec["train_top1"], val_txt, rec["lr"],
                            epoch_time)
            if world_size > 1:
                dist.barrier()

        result: dict[str, Any] = {}
        if main:
            if start_epoch < cfg.epochs:  # the last epoch's val top-1 is the final model's: no second pass
                val_top1 = history[-1]["val_top1"]
            else:
                val_top1 = score(model, val_data) if val_data else None
            test_top1 = score(model, splits.tensors("test", device=device)) if cfg.eval_test else None
            metrics = {"val_top1": val_top1, "test_top1": test_top1}
            save(final_path, metrics=metrics, history=history)
            result = {**metrics, "epochs": cfg.epochs, "train_time_s": train_time,
                      "epoch_time_s": train_time / len(history) if history else None,
                      "checkpoint": str(final_path), "history": history}
            atomic_write_json(run_dir / "metrics.json", result)
            if writer is not None and test_top1 is not None:
                writer.add_scalar("eval/test_top1", test_top1, cfg.epochs)
        if world_size > 1:
            dist.barrier()
        return result
    finally:
        if cfg.channels_last:  # hand both models back in the default format
            model.to(memory_format=torch.contiguous_format)
            if teacher is not None:
                teacher.to(memory_format=torch.contiguous_format)
        if teacher is not None:
            teacher.train(teacher_was_training)
        if writer is not None:
            writer.close()
        if created_group:
            dist.destroy_process_group()
