"""Training and fine-tuning options: the one owner of their defaults, descriptions and checks.

* :class:`TrainOptions`: the hyper-parameters of :func:`amc.training.train` (``amc.training.TrainConfig``
  is its flat dataclass view, stored in every checkpoint).
* :class:`KDOptions`: knowledge distillation (Hinton et al. 2015) from the uncompressed model.
* :class:`FinetuneOptions`: ``{train, distill, iterative}``, with fine-tuning's own defaults (5 epochs at
  lr 0.01; ``amc.finetune.FinetuneConfig`` is its flat view).
* :class:`TrainCommandOptions`: everything ``amc train`` takes (``{data, train, distill, run}``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo

from amc.config.search import Options, PathStr, Precision, _flag, _Section, section

__all__ = ["TrainOptions", "KDOptions", "FinetuneTrainOptions", "FinetuneOptions", "TrainCommandOptions", "ShareOptions",
           "FinetuneCommandOptions", "DeepCompressionOptions", "like"]


def like(info: FieldInfo, **changes: Any) -> Any:
    """``info`` (another section's field) with ``changes`` (default, description, flag=... or None)."""
    if "flag" in changes:
        flag = changes.pop("flag")
        changes["json_schema_extra"] = {"flag": flag} if flag else {}
    return FieldInfo.merge_field_infos(info, **changes)


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("must be a number, not a bool")
    return v


def _size(v: Any) -> Any:
    """``--image-size``: H, "H,W", "HxW" or [H, W] -> (H, W)."""
    if isinstance(v, str):
        v = [p for p in v.replace("x", ",").split(",") if p.strip()]
    if isinstance(v, int):
        v = [v]
    if isinstance(v, (list, tuple)) and len(v) == 1:
        v = [v[0], v[0]]
    return v


Count = Annotated[int, BeforeValidator(_no_bool)]
Number = Annotated[float, BeforeValidator(_no_bool)]


class TrainOptions(_Section):
    """SGD with a per-iteration cosine schedule; evaluation; device and precision."""

    epochs: Count = Field(10, ge=1, description="passes over the train split", json_schema_extra=_flag("--epochs"))
    batch_size: Count = Field(128, ge=1, description="samples per step (per process under torchrun)",
                              json_schema_extra=_flag("--batch-size"))
    lr: Number = Field(0.1, gt=0, description="peak learning rate of SGD (0.1 from scratch, 0.01 to fine-tune)",
                       json_schema_extra=_flag("--lr"))
    momentum: Number = Field(0.9, ge=0, lt=1, description="SGD momentum", json_schema_extra=_flag("--momentum"))
    nesterov: bool | None = Field(True, description="Nesterov momentum (needs momentum > 0; none: momentum > 0)")
    weight_decay: Number = Field(5e-4, ge=0, description="L2 penalty on all parameters", json_schema_extra=_flag("--wd"))
    label_smoothing: Number = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing",
                                    json_schema_extra=_flag("--label-smoothing"))
    warmup_epochs: Number = Field(0.0, ge=0, description="linear warm-up epochs (fractions allowed), then the schedule",
                                  json_schema_extra=_flag("--warmup-epochs"))
    schedule: Literal["cosine", "constant"] = Field("cosine", description="per-iteration cosine decay to lr_min, "
                                                                          "or constant")
    lr_min: Number = Field(0.0, ge=0, description="final learning rate of the cosine schedule (<= lr)")
    augment: bool = Field(True, description="random crop + flip of train batches", json_schema_extra=_flag("--augment"))
    cutout: Count = Field(0, ge=0, description="mask a random square of this side (pixels) out of every train image "
                                               "(Cutout; 16 for CIFAR-10; 0: off)", json_schema_extra=_flag("--cutout"))
    steps_per_epoch: Count | None = Field(None, ge=1, description="cap on steps per epoch (none: the whole split)")
    eval_batch_size: Count = Field(1000, ge=1, description="batch size of evaluation")
    seed: int = Field(0, description="seeds initialisation, shuffling and augmentation", json_schema_extra=_flag("--seed"))
    device: Annotated[str, BeforeValidator(str)] = Field("auto", description="auto, cpu, cuda, cuda:N, mps",
                                                         json_schema_extra=_flag("--device"))
    num_threads: Count | None = Field(None, ge=1, description="torch CPU threads (none: torch's choice)",
                                      json_schema_extra=_flag("--threads"))
    precision: Precision = Field("fp32", description="fp32, or mixed precision: bf16 (CPUs with AVX-512 BF16/AMX, "
                                                     "recent GPUs) or fp16 (CUDA)", json_schema_extra=_flag("--precision"))
    channels_last: bool = Field(False, description="train in the NHWC memory format (faster conv kernels)",
                                json_schema_extra=_flag("--channels-last"))
    eval_precision: Precision = Field("fp32", description="precision of the evaluations (bf16 moves top-1 by up to "
                                                          "a few tenths)")
    eval_test: bool = Field(True, description="evaluate the test split at the end")
    slimming: Number = Field(
        0.0, ge=0, allow_inf_nan=False, json_schema_extra=_flag("--slimming"),
        description="network slimming (Liu et al. 2017): add LAMBDA * sum|gamma| over the norm layers' "
                    "scales to the loss (1e-4 VGG, 1e-5 ResNet; 0: off); prune afterwards with --importance "
                    "bn_scale")

    @model_validator(mode="after")
    def _consistent(self) -> Any:
        if self.nesterov is None:
            self.nesterov = self.momentum > 0
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0; set nesterov=False or momentum=0.9")
        if self.epochs is not None and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r}: must be in [0, epochs={self.epochs}]")
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min={self.lr_min!r}: must be in [0, lr={self.lr}]")
        return self


class KDOptions(_Section):
    """Knowledge distillation from the uncompressed model (Hinton et al. 2015)."""

    kd: bool = Field(True, description="distil from the uncompressed model (false: labels only)",
                     json_schema_extra=_flag("--kd"))
    kd_temperature: Number = Field(4.0, description="KD temperature T > 0 (Hinton et al. use 1..20)",
                                   json_schema_extra=_flag("--kd-temperature"))
    kd_alpha: Number = Field(0.9, description="weight of the KD term in [0, 1] (labels get 1 - alpha)",
                             json_schema_extra=_flag("--kd-alpha"))

    @field_validator("kd_temperature", "kd_alpha")
    @classmethod
    def _in_range(cls, v: float, info: ValidationInfo) -> float:
        """Checked with ``kd`` on only (without it they are unused)."""
        if info.field_name == "kd_temperature" and info.data.get("kd", True) and not v > 0:
            raise ValueError("distillation temperature must be > 0 (Hinton et al. use 1..20)")
        if info.field_name == "kd_alpha" and info.data.get("kd", True) and not 0 <= v <= 1:
            raise ValueError("distillation alpha (the weight of the KD term) must be in [0, 1]")
        return v


class FinetuneTrainOptions(TrainOptions):
    """As :class:`TrainOptions`, with fine-tuning's defaults: 5 epochs at a 10x lower lr, Nesterov iff momentum."""

    epochs: Count = Field(5, ge=1, description="epochs of fine-tuning per step (an iterative schedule of K steps "
                                               "trains K x epochs)", json_schema_extra=_flag("--epochs"))
    lr: Number = Field(0.01, gt=0, description="peak learning rate, cosine decay (fine-tuning wants ~10x less than "
                                               "training)", json_schema_extra=_flag("--lr"))
    nesterov: bool | None = Field(None, description="Nesterov momentum (none: when momentum > 0)")


class FinetuneOptions(_Section):
    """Fine-tuning a compressed model: training, distillation and the iterative schedule."""

    train: FinetuneTrainOptions = section(FinetuneTrainOptions, "SGD with a cosine schedule, as amc train's, "
                                                                "at fine-tuning's defaults")
    distill: KDOptions = section(KDOptions, "knowledge distillation from the uncompressed model")
    iterative: Count = Field(1, ge=1, description="prune + fine-tune in K steps (step k keeps 1-(1-r)k/K of each "
                                                  "group; 1: one-shot)", json_schema_extra=_flag("--iterative"))


# --------------------------------------------------------------------------------------------------
# amc train


class TrainData(_Section):
    model: str | None = Field(None, description="a built-in model (resnet20, vgg11, lenet5, ...), torchvision:<name> "
                                                "or package.module:factory (required)", json_schema_extra=_flag("--model"))
    model_kwargs: Options = Field(default_factory=dict, description="extra model keyword argument, repeatable, e.g. "
                                                                    "width_mult=0.5", json_schema_extra=_flag("--model-arg"))
    dataset: str | None = Field(None, description="digits, fashion-mnist, cifar10 or imagefolder (required)",
                                json_schema_extra=_flag("--dataset"))
    data_dir: PathStr | None = Field(None, description="where the dataset's files are",
                                     json_schema_extra=_flag("--data-dir"))
    val_size: int | float | None = Field(None, gt=0, description="images held out from train for validation: a count "
                                                                 "or a fraction (none: the dataset's, e.g. 5000 for "
                                                                 "cifar10)", json_schema_extra=_flag("--val-size"))
    image_size: Annotated[tuple[int, int] | None, BeforeValidator(_size)] = Field(
        None, description="resize images to H or H,W (imagefolder)", json_schema_extra=_flag("--image-size"))


class CommandTrainOptions(TrainOptions):
    epochs: Count | None = Field(None, ge=1, description="epochs (none: 10, or as many as make 1500 steps on a small "
                                                         "dataset such as digits)", json_schema_extra=_flag("--epochs"))
    nesterov: bool | None = Field(None, description="Nesterov momentum (none: when momentum > 0)")


class TeacherOptions(KDOptions):
    kd: bool = Field(True, description="distil from --teacher when one is given", json_schema_extra={"cli": False})
    teacher: PathStr | None = Field(None, description="distil from this checkpoint (Hinton KD)",
                                    json_schema_extra=_flag("--teacher"))


class TrainRun(_Section):
    init: PathStr | None = Field(None, description="start from this checkpoint's weights (same model) instead of a "
                                                   "random initialisation", json_schema_extra=_flag("--init"))
    run_dir: PathStr | None = Field(None, description="output folder (none: runs/<model>-<dataset>)",
                                    json_schema_extra=_flag("--run-dir"))
    resume: bool = Field(False, description="continue from <run-dir>/last.pt", json_schema_extra=_flag("--resume"))
    overwrite: bool = Field(False, description="start again in a run dir that holds a training run (its checkpoints "
                                               "and curves are deleted)", json_schema_extra=_flag("--overwrite"))


class TrainCommandOptions(_Section):
    """``amc train``: a model, a dataset, the training and the run directory."""

    data: TrainData = section(TrainData, "the model to train and its dataset")
    train: CommandTrainOptions = section(CommandTrainOptions, "SGD with a per-iteration cosine schedule; "
                                                              "evaluation; device and precision")
    distill: TeacherOptions = section(TeacherOptions, "knowledge distillation from a trained checkpoint "
                                                      "(Hinton et al. 2015)")
    run: TrainRun = section(TrainRun, "initial weights, output folder, resume")

    @model_validator(mode="after")
    def _consistent(self) -> TrainCommandOptions:
        for req in ("model", "dataset"):
            if not getattr(self.data, req):
                raise ValueError(f"--{req} is required (or set '{req}:' in --config)")
        if self.run.resume and self.run.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: --resume continues the run, --overwrite "
                             "starts it again")
        return self


# --------------------------------------------------------------------------------------------------
# amc finetune


class PruneOptions(_Section):
    """Deep Compression's first stage: magnitude pruning in K steps, each retrained with the masks held fixed."""

    prune_steps: Count = Field(3, ge=1, description="prune + retrain steps K (the paper prunes iteratively)")
    prune_epochs: Count = Field(5, ge=0, description="retraining epochs per step (0: prune without retraining)")
    prune_lr: Number = Field(0.01, gt=0, allow_inf_nan=False, description="peak learning rate of retraining (cosine; "
                                                                          "~1/10 of training's, as the paper)")


class ShareOptions(_Section):
    """Deep Compression's last stages: k-means weight sharing with centroid fine-tuning, Huffman coding."""

    share_epochs: Count = Field(3, ge=0, description="epochs of centroid fine-tuning",
                                json_schema_extra=_flag("--share-epochs"))
    share_lr: Number = Field(1e-3, gt=0, allow_inf_nan=False, description="peak learning rate of the centroids (their "
                             "gradients are sums over many weights)", json_schema_extra=_flag("--share-lr"))
    kmeans_iters: Count = Field(30, ge=1, description="Lloyd iterations of the weight sharing",
                                json_schema_extra=_flag("--kmeans-iters"))
    huffman: bool = Field(True, description="Huffman-code the codes and indices in the last stage",
                          json_schema_extra=_flag("--huffman"))


_T = TrainOptions.model_fields


class DeepCompressionTrain(_Section):
    """The retraining of both stages, as :class:`TrainOptions` (weight decay 1e-4, not applied to the centroids)."""

    batch_size: int = _T["batch_size"]
    weight_decay: float = like(_T["weight_decay"], default=1e-4)
    augment: bool = _T["augment"]
    steps_per_epoch: int | None = _T["steps_per_epoch"]
    seed: int = _T["seed"]
    device: str = _T["device"]
    num_threads: int | None = _T["num_threads"]


class DeepCompressionOptions(_Section):
    """Deep Compression (Han et al. 2016): ``amc.deep_compression.DeepCompressionConfig`` is its flat view."""

    prune: PruneOptions = section(PruneOptions)
    share: ShareOptions = section(ShareOptions)
    distill: KDOptions = section(KDOptions, "distillation while retraining")
    train: DeepCompressionTrain = section(DeepCompressionTrain)


class DeepCompressionSwitch(ShareOptions):
    deep_compression: bool = Field(False, description="run the three-stage pipeline on a fine-granularity --policy "
                                                      "(per-layer sparsity and w_bits): prune + retrain with masks "
                                                      "(--iterative steps of --epochs at --lr), k-means weight sharing "
                                                      "with centroid fine-tuning, Huffman coding",
                                   json_schema_extra=_flag("--deep-compression"))


class FinetuneRun(_Section):
    run_dir: PathStr | None = Field(None, description="output folder (required)", json_schema_extra=_flag("--run-dir"))
    resume: bool = Field(False, description="continue the run in --run-dir", json_schema_extra=_flag("--resume"))
    overwrite: bool = Field(False, description="start again in a --run-dir that holds a fine-tuning run (its outputs "
                                               "are deleted)", json_schema_extra=_flag("--overwrite"))


class _CommandFinetuneTrain(FinetuneTrainOptions):
    epochs: Count = Field(5, ge=0, description="epochs of fine-tuning per step (per pruning step with "
                                               "--deep-compression, where 0 prunes without retraining)",
                          json_schema_extra=_flag("--epochs"))


class FinetuneCommandOptions(FinetuneOptions):
    """``amc finetune``: :class:`FinetuneOptions`, Deep Compression's stages and the run directory."""

    train: _CommandFinetuneTrain = section(_CommandFinetuneTrain, "SGD with a cosine schedule, as amc "
                                                                  "train's, at fine-tuning's defaults")
    share: DeepCompressionSwitch = section(DeepCompressionSwitch, "the three stages of Han et al. 2016 (with "
                                                                  "--deep-compression)")
    run: FinetuneRun = section(FinetuneRun, "the output folder (training run, model.amc, policy.json, "
                                            "finetune_summary.json)")

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneCommandOptions:
        if "epochs" not in self.train.model_fields_set:
            raise ValueError("--epochs is required (epochs per step with --iterative)")
        if self.train.epochs < 1 and not self.share.deep_compression:
            raise ValueError("--epochs must be >= 1 (0 only with --deep-compression: pruning without retraining)")
        if not self.run.run_dir:
            raise ValueError("--run-dir is required")
        if self.run.resume and self.run.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: --resume continues the run, --overwrite "
                             "starts it again")
        return self
