"""From a learned policy to a fine-tuned compressed model.

* :func:`prepare` gathers what rebuilding a policy's model needs, exactly as the search evaluated it,
  from what the policy records (:mod:`amc.policy`): the trained checkpoint (checked by sha256), the
  dataset with the search's val holdout, a :class:`amc.pruning.Pruner` seeded like the search's and
  the train images of :func:`amc.compress.inputs_for_policy`; explicit arguments win. A policy that
  does not fit the checkpoint's model is mapped onto it by :func:`amc.transfer.transfer_policy`.
  :meth:`PolicySetup.compress` then calls :func:`amc.compress.apply_policy`, the one code path that
  builds compressed models.
* :func:`finetune` trains a compressed model with :func:`amc.training.train` (SGD, cosine schedule,
  progress bar, TensorBoard, checkpoints, resume) and Hinton knowledge distillation from the
  uncompressed teacher (on by default). Quantized models train through their fake-quant wrappers
  (quantization-aware training with the straight-through estimator); zeroed weights of a
  fine-grained (unstructured) policy stay zero (masks).
* :func:`finetune_policy` runs the whole thing, one-shot or iteratively (:func:`iterative_schedule`:
  step ``k`` of ``K`` keeps ``1 - (1 - r) k / K`` of each group's channels, re-pruning the fine-tuned
  model of step ``k - 1`` with a new ``Pruner``, so channels are chosen on the current weights),
  reports top-1 before and after, and exports the result (:mod:`amc.export`).

Run directory of :func:`finetune_policy`::

    last.pt, final.pt, events...   amc.training.train's files (one-shot); step1/, step2/ ... (iterative)
    model.amc                      the exported model (amc.load)
    policy.json                    the policy applied (after transfer, if any)
    finetune_summary.json          accuracies before/after, costs, timings
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import prune as tprune

from amc.compress import apply_policy, check_policy_matches, inputs_for_policy
from amc.config.flat import FlatConfig, flat_config
from amc.config.train import FinetuneOptions
from amc.cost import kept_channels
from amc.data import get_dataset
from amc.errors import AmcError
from amc.export import export
from amc.graph import count_macs_params
from amc.models import ModelSpec, resolve_spec
from amc.models import example_input as spec_example
from amc.policy import GroupDecision, LayerDecision, Policy, data_record
from amc.pruning import Pruner
from amc.quantization import QuantWrapper, quantized_layers
from amc.training import TrainConfig, evaluate, load_checkpoint, train
from amc.transfer import policy_costs, policy_matches, transfer_policy
from amc.utils import atomic_write_json, file_sha256, resolve_device

log = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "PolicySetup", "FinetuneResult", "prepare", "finetune", "finetune_policy",
           "iterative_schedule", "model_costs"]

_FULL_SPEC = frozenset({"num_classes", "in_channels", "image_size"})
#: the evaluation batch size of searches whose policy does not record one (SearchConfig's default)
_SEARCH_EVAL_BATCH = 512


# --------------------------------------------------------------------------------------------------
# config


class _FinetuneConfigBase(FlatConfig):
    def train_config(self) -> Any:
        """The :class:`amc.training.TrainConfig` of one fine-tuning step."""
        return TrainConfig(**{name: getattr(self, name) for name in TrainConfig.field_names()})


#: Fine-tuning hyper-parameters, flat: one attribute per leaf of :class:`amc.config.train.FinetuneOptions`
#: (``train`` as in ``amc.training.TrainConfig`` but 5 epochs at lr 0.01 and Nesterov iff momentum > 0;
#: ``kd``, ``kd_temperature``, ``kd_alpha``: distillation from the uncompressed model, its options unused
#: without it; ``iterative``: prune + fine-tune steps, 1 = one-shot). ``precision="bf16"`` with
#: channels_last makes a CPU step ~2x faster on AVX-512 BF16 / AMX; QAT is better left at ``fp32``, as
#: bf16 rounds the fake-quantized weights off their grid. A bad value raises ``AmcError``.
FinetuneConfig = flat_config("FinetuneConfig", FinetuneOptions, module=__name__, base=_FinetuneConfigBase,
                             doc="Fine-tuning hyper-parameters: the leaves of amc.config.train.FinetuneOptions.")


# --------------------------------------------------------------------------------------------------
# setup: checkpoint + data + policy, as the search had them


@dataclass
class PolicySetup:
    """What :func:`prepare` found; :meth:`compress` builds the policy's model from it."""

    policy: Policy
    base_model: nn.Module
    model_spec: dict[str, Any] | None
    splits: Any
    pruner: Pruner
    calibration: torch.Tensor | None
    quant_calibration: list[torch.Tensor] | None
    device: torch.device
    proxy_data: Any = None  # amc.proxies.ProxyData of the policy's evaluation proxy
    data: dict[str, Any] = field(default_factory=dict)  # amc.policy.data_record of the data used
    eval_batch_size: int = _SEARCH_EVAL_BATCH  # the search's evaluation: batch size, val images scored
    eval_limit: int | None = None
    transferred: bool = False
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    #: what differs from the policy's record (checkpoint, dataset, val holdout); None: it records none
    differences: list[str] | None = None

    @property
    def example_input(self) -> torch.Tensor:
        return self.pruner.example_input

    def compress(self, policy: Policy | None = None) -> nn.Module:
        """The compressed model (via :func:`amc.compress.apply_policy`, as the search built it)."""
        return apply_policy(self.base_model, policy or self.policy, pruner=self.pruner,
                            calibration=self.calibration, quant_calibration=self.quant_calibration,
                            proxy_data=self.proxy_data)

    def evaluate(self, model: nn.Module, split: str = "val", *, limit: int | None = None,
                 precision: str = "fp32") -> float | None:
        """Top-1 (%) on ``split`` (``None`` when the split is empty or there is no dataset)."""
        if self.splits is None:
            return None
        x, y = self.splits.tensors(split, device=self.device, limit=limit)
        return evaluate(model.to(self.device), (x, y), batch_size=self.eval_batch_size,
                        precision=precision) if len(y) else None


def _same_name(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()


def _source_spec(policy: Policy, base: nn.Module, spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A complete spec of the model the policy was found on (for a transfer): the policy's own, or the
    target's when the names agree (a policy of a checkpoint without a spec records only a class name)."""
    pm = policy.model
    if _FULL_SPEC <= set(pm):
        return dict(pm)
    if spec is not None and (_same_name(pm.get("name"), spec.get("name")) or _same_name(pm.get("name"),
                                                                                         type(base).__name__)):
        return dict(spec)
    return None


def _recorded_checkpoint(policy: Policy) -> tuple[Path, str]:
    """The checkpoint ``policy`` records and its sha256, when it is still there with the same bytes."""
    path = policy.checkpoint.get("path")
    if not path:
        raise AmcError("no checkpoint: pass --checkpoint (the trained, uncompressed model the policy is applied to; "
                       "this policy does not record one)")
    found = Path(path).expanduser()
    if not found.is_file():
        where = "" if found.is_absolute() else " (relative to where the search ran)"
        raise AmcError(f"the policy's checkpoint {path!r}{where} is not there any more: pass --checkpoint (the "
                       "trained, uncompressed model the search compressed)")
    sha = file_sha256(found)
    recorded = policy.checkpoint.get("sha256")
    if recorded and sha != recorded:
        raise AmcError(f"the policy's checkpoint {path!r} has changed since the search (sha256 {sha[:12]}..., the "
                       f"policy records {recorded[:12]}...): pass --checkpoint (the model the search compressed)")
    return found, sha


def _differences(policy: Policy, sha: str, data: Mapping[str, Any]) -> list[str] | None:
    """What the setup takes otherwise than the search did (``checkpoint``, ``dataset``, ``val holdout``);
    ``None`` when the policy records neither its checkpoint nor its data (version 1)."""
    rec_sha, rec = policy.checkpoint.get("sha256"), policy.data
    if not rec_sha and not rec:
        return None
    out = []
    if rec_sha and rec_sha != sha:
        out.append("checkpoint")
    if rec and str(rec.get("dataset", "")).lower() != str(data.get("dataset", "")).lower():
        out.append("dataset")
    elif rec and (rec.get("seed") != data.get("seed") or (rec.get("sizes") and rec["sizes"] != data.get("sizes"))):
        out.append("val holdout")
    return out


def prepare(
    policy: Policy | str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    model: str | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    val_size: int | float | None = None,
    data_seed: int | None = None,
    transfer: bool | None = None,
    budget: str | None = None,
    device: str | torch.device = "cpu",
    need_data: bool = True,
) -> PolicySetup:
    """Load everything :meth:`PolicySetup.compress` needs to rebuild ``policy``'s model exactly.

    Everything defaults to what the policy records (:mod:`amc.policy`: its checkpoint, data and
    scoring); explicit arguments win.

    Args:
        policy: a :class:`Policy` or the path of a policy JSON.
        checkpoint: the trained uncompressed model (``amc train`` checkpoint); default: the policy's,
            which must still be where it records with the same sha256.
        model: expected model name; an error if the checkpoint holds another.
        dataset, data_dir, val_size, data_seed: the data and the val holdout (default: the policy's;
            for a policy that records none, the checkpoint's dataset with its default holdout, seed 0).
        transfer: ``True``: always map the policy with :func:`amc.transfer.transfer_policy`;
            ``None``: only when it does not match the checkpoint's model; ``False``: never (a
            mismatch is an error).
        budget: ``METRIC=RATIO`` for a transfer (default: the policy's own budget).
        device: where the models and data go.
        need_data: ``False`` allows no dataset when the policy needs no calibration images.
    """
    policy = Policy.load(policy) if not isinstance(policy, Policy) else Policy.from_dict(policy.to_dict())  # a copy
    dev = resolve_device(device)
    if checkpoint is not None:
        ckpt_path = Path(checkpoint).expanduser()
        sha = file_sha256(ckpt_path) if ckpt_path.is_file() else ""  # (load_checkpoint names a missing file)
    else:
        ckpt_path, sha = _recorded_checkpoint(policy)
    base, ckpt = load_checkpoint(ckpt_path, device=dev)
    spec = ckpt.get("model_spec")
    if model is not None and spec and not _same_name(model, spec.get("name")):
        raise AmcError(f"checkpoint {str(ckpt_path)!r} holds a {spec.get('name')!r} model, not {model!r}; drop --model "
                       "or pass a matching checkpoint")

    rec, info = policy.data, ckpt.get("data") or {}
    ds = dataset or rec.get("dataset") or info.get("dataset")
    splits = None
    data: dict[str, Any] = {}
    if ds:
        same_rec = str(rec.get("dataset", "")).lower() == str(ds).lower()
        same_ckpt = str(info.get("dataset", "")).lower() == str(ds).lower()
        ddir = data_dir or (rec.get("data_dir") if same_rec else None) or (
            info.get("data_dir") if same_ckpt and str(ds).lower() != "digits" else None)
        vs = val_size if val_size is not None else (rec.get("val_size") if same_rec else None)
        if isinstance(vs, float) and vs.is_integer() and vs >= 1:
            vs = int(vs)
        seed = data_seed if data_seed is not None else int((rec.get("seed") if same_rec else 0) or 0)
        image_size = tuple(spec["image_size"]) if spec and str(ds).lower() == "imagefolder" else None
        splits = get_dataset(str(ds), data_dir=ddir, val_size=vs, seed=seed, image_size=image_size)
        data = data_record(splits, data_dir=ddir, val_size=vs)
        if spec and (int(spec.get("num_classes", -1)) != splits.num_classes
                     or int(spec.get("in_channels", -1)) != splits.in_channels):
            raise AmcError(f"the checkpoint's model expects {spec.get('in_channels')}-channel images and "
                           f"{spec.get('num_classes')} classes; {splits.name} has {splits.in_channels} and "
                           f"{splits.num_classes}: pass the matching --dataset")
    elif need_data:
        raise AmcError("no dataset: pass --dataset (neither the policy nor the checkpoint records one)")
    if spec is None and model is not None and splits is not None:
        spec = ModelSpec.for_data(model, splits).to_dict()
    if spec is not None:
        spec = resolve_spec(spec).to_dict()

    example = splits.tensors("val", device=dev, limit=1)[0] if splits is not None and len(splits.val) else None
    if example is None:
        if spec is None:
            raise AmcError("cannot trace the model: give a dataset or a checkpoint with a model spec")
        example = spec_example(spec).to(dev)
    pruner = Pruner(base, example, seed=policy.scoring.calibration_seed)

    differences = _differences(policy, sha, data)
    matches = policy_matches(policy, pruner.graph)
    transferred = bool(transfer or (transfer is None and not matches))
    if transferred:
        if not matches:
            log.info("the policy (found on %s) does not match the checkpoint's model %s: transferring it",
                     policy.model.get("name"), (spec or {}).get("name", type(base).__name__))
        src_spec = _source_spec(policy, base, spec)
        if src_spec is not None:
            policy.model = src_spec
        policy = transfer_policy(policy, base, example, target_spec=spec, budget=budget, graph=pruner.graph)
    else:
        check_policy_matches(policy, pruner)  # names the first difference
        if spec is not None and not (_FULL_SPEC <= set(policy.model)):
            policy.model = dict(spec)  # a checkpoint without a spec: the search recorded only the class name
    # a transferred policy, or one that records no origin, is now this checkpoint's and data's: it records
    # them, so that the policy.json apply and finetune write applies alone
    if transferred or differences is None:
        policy.checkpoint = {"path": str(ckpt_path), "sha256": sha}
        policy.data = dict(data)

    inputs = inputs_for_policy(policy, splits, device=dev, teacher=base)
    scored = policy.scoring.val_images
    return PolicySetup(
        policy=policy, base_model=base, model_spec=spec, splits=splits, pruner=pruner, calibration=inputs.calibration,
        quant_calibration=inputs.quant_calibration, proxy_data=inputs.proxy_data, device=dev, data=data,
        eval_batch_size=policy.scoring.eval_batch_size or _SEARCH_EVAL_BATCH,
        eval_limit=scored if splits is not None and scored is not None and scored < len(splits.val) else None,
        transferred=transferred, checkpoint=str(ckpt_path), checkpoint_sha256=sha or None, differences=differences)


# --------------------------------------------------------------------------------------------------
# costs


def model_costs(setup: PolicySetup, compressed: nn.Module) -> dict[str, Any]:
    """Costs of ``compressed`` against the uncompressed model: the cost model's ratios of the policy
    (``cost_model``) and a direct count on the built model (``direct``: MACs and parameters traced,
    nonzero weights, weight storage bits with the real bit widths)."""
    x = setup.example_input[:1]
    base_macs, base_params = count_macs_params(setup.base_model, x)
    # traced without the quantization wrappers (a wrapper runs its layer's functional form: hooks miss it)
    traced = copy.deepcopy(compressed) if quantized_layers(compressed) else compressed
    for name in quantized_layers(traced):
        traced.set_submodule(name, traced.get_submodule(name).module)
    macs, params = count_macs_params(traced, x)
    (_, base_bits), (nonzero, bits) = _weights(setup.base_model), _weights(compressed)
    return {
        "cost_model": policy_costs(setup.policy, setup.pruner.graph, setup.base_model),
        "direct": {
            "macs": macs, "params": params, "base_macs": base_macs, "base_params": base_params,
            "nonzero_weights": nonzero, "weight_bits": bits, "base_weight_bits": base_bits,
            "macs_ratio": macs / base_macs, "params_ratio": params / base_params, "size_ratio": bits / base_bits,
        },
        "quantized_layers": len(quantized_layers(compressed)),
    }


def _weights(model: nn.Module) -> tuple[int, int]:
    """Nonzero conv/linear weights, and their storage bits (x their bit width, 32 for float): what a
    dense-or-sparse store of the values needs, indices of sparse layers not counted."""
    bits = {id(w.module): w.w_bits for w in quantized_layers(model).values()}
    counts = [(int((m.weight != 0).sum()), bits.get(id(m)) or 32)
              for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(n for n, _ in counts), sum(n * b for n, b in counts)


# --------------------------------------------------------------------------------------------------
# fine-tuning


def finetune(model: nn.Module, splits: Any, cfg: FinetuneConfig, *, run_dir: str | os.PathLike,
             teacher: nn.Module | None = None, resume: bool = False, progress: bool = False,
             model_spec: Mapping[str, Any] | None = None, sparse_layers: Sequence[str] = (),
             meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` in place with :func:`amc.training.train` (returns its result dict).

    ``teacher`` is distilled from when ``cfg.kd`` (Hinton KD, ``cfg.kd_temperature``/``kd_alpha``).
    ``sparse_layers`` (module names) keep their zero weights at zero. Quantized layers train with the
    straight-through estimator. ``resume`` continues from ``run_dir/last.pt``.
    """
    if cfg.kd and teacher is None:
        raise AmcError("knowledge distillation needs the uncompressed teacher model; pass teacher= or kd=False")
    for p in model.parameters():  # a copy of a frozen teacher would not train
        p.requires_grad_(True)
    masked = [m.module if isinstance(m, QuantWrapper) else m for m in map(model.get_submodule, sparse_layers)]
    for m in masked:  # their zero weights stay zero while training (torch.nn.utils.prune masks)
        if not hasattr(m, "weight_mask"):
            tprune.custom_from_mask(m, "weight", (m.weight.detach() != 0).to(m.weight.dtype))
    try:
        return train(model, splits, cfg.train_config(), run_dir=run_dir, teacher=teacher if cfg.kd else None,
                     kd_temperature=cfg.kd_temperature, kd_alpha=cfg.kd_alpha, resume=resume,
                     progress=progress, model_spec=model_spec,
                     extra_meta={"finetune": cfg.to_dict(), **dict(meta or {})})
    finally:
        for m in masked:
            if hasattr(m, "weight_mask"):
                tprune.remove(m, "weight")


def iterative_schedule(policy: Policy, steps: int) -> list[list[int]]:
    """Kept channels per group after each of ``steps`` prune steps: step ``k`` keeps
    ``ceil((1 - (1 - r) k / K) * total)`` (``r`` the policy's keep ratio); the last step keeps exactly
    the policy's channels."""
    if steps < 1:
        raise AmcError(f"iterative steps must be >= 1, got {steps}")
    return [[g.channels if k == steps else kept_channels(1 - (1 - g.channels / g.total) * k / steps, g.total)
             for g in policy.groups] for k in range(1, steps + 1)]


def _step_policy(policy: Policy, channels: Sequence[int], graph: Any, *, fraction: float, final: bool) -> Policy:
    """The policy of one iterative step relative to the current (already partly pruned) model."""
    current = {g.leader: g for g in graph.groups}
    groups = []
    for pg, ch in zip(policy.groups, channels):
        g = current.get(pg.layers[0])
        if g is None:
            raise AmcError(f"iterative pruning: group {pg.layers[0]!r} is no longer prunable in the fine-tuned model")
        ch = min(int(ch), g.channels)
        groups.append(GroupDecision(layers=g.layers, keep_ratio=ch / g.channels, channels=ch, total=g.channels))
    layers = [LayerDecision(name=ly.name, kind=ly.kind, w_bits=ly.w_bits if final else None,
                            a_bits=ly.a_bits if final else None,
                            sparsity=None if not ly.sparsity else float(ly.sparsity) * fraction)
              for ly in policy.layers]
    return dataclasses.replace(policy, groups=groups, layers=layers)


@dataclass
class FinetuneResult:
    """The fine-tuned model and the summary written to ``finetune_summary.json``."""

    model: nn.Module
    summary: dict[str, Any]


def _top1(setup: PolicySetup, model: nn.Module) -> dict[str, float | None]:
    return {"val_top1": setup.evaluate(model, "val"), "test_top1": setup.evaluate(model, "test")}


def finetune_policy(
    setup: PolicySetup,
    cfg: FinetuneConfig,
    *,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = False,
    export_name: str | None = "model.amc",
    student: nn.Module | None = None,
) -> FinetuneResult:
    """Compress ``setup``'s model as its policy says, fine-tune it (one-shot or ``cfg.iterative``
    steps), export it to ``run_dir/export_name`` and write ``run_dir/finetune_summary.json``.

    ``student``: an already compressed model of ``setup.policy`` (e.g. ``amc.load`` of an exported
    file) to fine-tune instead of compressing the checkpoint again (one-shot only).

    ``resume`` continues an interrupted run: completed iterative steps are loaded from their
    ``final.pt``, the interrupted one continues from its ``last.pt``.
    """
    if setup.splits is None:
        raise AmcError("fine-tuning needs a dataset")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.device == "auto":  # train where the setup's models and data are
        cfg = dataclasses.replace(cfg, device=str(setup.device))
    t0 = time.perf_counter()
    policy = setup.policy
    setup.policy.save(run_dir / "policy.json")
    base_acc = _top1(setup, setup.base_model)
    if student is not None and cfg.iterative > 1:
        raise AmcError("an already compressed model cannot be pruned iteratively; use iterative=1 (or start from "
                       "the policy and the uncompressed checkpoint)")
    one_shot = student.to(setup.device) if student is not None else setup.compress()
    before = _top1(setup, one_shot)
    log.info("uncompressed val top-1 %s; compressed before fine-tuning %s", base_acc["val_top1"], before["val_top1"])

    def tune(model: nn.Module, where: Path, p: Policy, **step: int) -> dict[str, Any]:
        return finetune(model, setup.splits, cfg, run_dir=where, teacher=setup.base_model, resume=resume,
                        progress=progress, model_spec=setup.model_spec,
                        sparse_layers=[ly.name for ly in p.layers if ly.sparsity],
                        meta={"policy": policy.to_dict(), **step})

    steps: list[dict[str, Any]] = []
    K = cfg.iterative
    if K == 1:
        student = one_shot
        res = tune(student, run_dir, policy)
        steps.append({"step": 1, "before": before, "after": _top1(setup, student), "train_time_s": res.get("train_time_s")})
    else:
        del one_shot
        schedule = iterative_schedule(policy, K) if policy.granularity == "channel" else [[]] * K
        current = setup.base_model
        for k in range(1, K + 1):
            step_dir = run_dir / f"step{k}"
            final = step_dir / "final.pt"
            if resume and final.is_file():
                current, _ = load_checkpoint(final, device=setup.device)
                log.info("step %d/%d already done: loaded %s", k, K, final)
                steps.append({"step": k, "resumed": True, "after": _top1(setup, current)})
                continue
            pruner = setup.pruner if current is setup.base_model else Pruner(current, setup.example_input,
                                                                             seed=setup.pruner.seed)
            sp = _step_policy(policy, schedule[k - 1], pruner.graph, fraction=k / K, final=k == K)
            student = apply_policy(current, sp, pruner=pruner, calibration=setup.calibration,
                                   quant_calibration=setup.quant_calibration, proxy_data=setup.proxy_data)
            acc0 = _top1(setup, student)
            log.info("step %d/%d: channels %s, val top-1 after pruning %s", k, K, [g.channels for g in sp.groups],
                     acc0["val_top1"])
            res = tune(student, step_dir, sp, step=k, steps=K)
            steps.append({"step": k, "channels": [g.channels for g in sp.groups], "before": acc0,
                          "after": _top1(setup, student), "train_time_s": res.get("train_time_s")})
            current = student
        student = current
    student.eval()
    after = _top1(setup, student)
    costs = model_costs(setup, student)
    summary: dict[str, Any] = {
        "policy": str(run_dir / "policy.json"), "checkpoint": setup.checkpoint, "data": setup.data,
        "transferred": setup.transferred, "finetune": cfg.to_dict(), "uncompressed": base_acc,
        "before": before, "after": after, "steps": steps, "costs": costs, "time_s": time.perf_counter() - t0}
    if export_name:
        path = export(student, run_dir / export_name, policy=policy, model_spec=setup.model_spec,
                      metrics={**after, **costs["cost_model"],
                               "before_val_top1": before["val_top1"], "before_test_top1": before["test_top1"]})
        summary["model_file"] = str(path)
        summary["model_file_bytes"] = path.stat().st_size
    atomic_write_json(run_dir / "finetune_summary.json", summary)
    return FinetuneResult(student, summary)
