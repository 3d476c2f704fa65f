"""The compression policy: amc's central artefact, a versioned JSON document (docs/policy.md).

A policy says, for one model, how many output channels each *prunable group* keeps (coupled layers
share one decision, see :mod:`amc.graph`) and, per compressible layer (by module name), the weight and
activation bit widths or the unstructured sparsity. It also says where it came from (the model spec,
the checkpoint and its sha256, the dataset and its val holdout) and how it was scored (the proxy,
its calibration images, the evaluation precision), so that ``amc apply --policy P`` rebuilds and
re-measures the compressed model exactly with nothing else given, and ``amc.transfer`` can map it
onto a sibling model.

Example (abridged)::

    {
      "format": "amc-policy", "version": 2,
      "model": {"name": "resnet20", "num_classes": 10, "in_channels": 3, "image_size": [32, 32], "kwargs": {}},
      "checkpoint": {"path": "runs/r20/final.pt", "sha256": "9f2c..."},
      "data": {"dataset": "cifar10", "data_dir": "data/cifar10", "val_size": 5000, "seed": 0,
               "sizes": {"train": 45000, "val": 5000, "test": 10000}},
      "mode": "prune", "granularity": "channel",
      "budget": {"metric": "macs", "ratio": 0.5, "target": "macs=0.5"},
      "pruning": {"importance": "l1", "round_to": 1, "lbound": 0.2},
      "scoring": {"proxy": "reconstruct", "calibration_size": 256, "calibration_seed": 0,
                  "eval_precision": "fp32", "eval_batch_size": 512, "val_images": 5000},
      "groups": [{"layers": ["conv1", "layer1.0.conv2", ...], "keep_ratio": 0.75, "channels": 12, "total": 16}, ...],
      "layers": [{"name": "conv1", "kind": "conv", "w_bits": null, "a_bits": null, "sparsity": null}, ...],
      "achieved": {"macs_ratio": 0.498, "params_ratio": 0.61},
      "accuracy": {"base_val_top1": 91.2, "val_top1": 84.0},
      "search": {"agent": "ddpg", "episode": 143, "episodes": 300, "seed": 0}
    }

Version 1 (amc before the provenance) kept the proxy and calibration in ``pruning`` and the precision
and val images in ``accuracy``; :meth:`Policy.from_dict` reads it into this layout.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from amc.errors import AmcError
from amc.utils import atomic_write_json, file_sha256

FORMAT = "amc-policy"
VERSION = 2
#: the versions :meth:`Policy.from_dict` reads (older ones are upgraded on reading)
READ_VERSIONS = (1, 2)
MODES = ("prune", "quant", "joint")
GRANULARITIES = ("channel", "fine")
METRICS = ("macs", "params", "size", "bitops", "latency")

__all__ = ["Policy", "GroupDecision", "LayerDecision", "Scoring", "parse_target", "checkpoint_record", "data_record",
           "FORMAT", "VERSION"]

#: keys of a version-1 ``pruning`` block that version 2 keeps in ``scoring``
_V1_SCORING_KEYS = ("proxy", "reconstruct", "calibration_size", "calibration_seed")


def parse_target(target: str) -> tuple[str, float]:
    """Parse a budget string such as ``"macs=0.5"`` into ``("macs", 0.5)``.

    The ratio is relative to the uncompressed float32 model and must lie in (0, 1].
    """
    if not isinstance(target, str) or "=" not in target:
        raise AmcError(f"budget {target!r} must look like METRIC=RATIO, e.g. macs=0.5; metrics: {', '.join(METRICS)}")
    metric, _, value = target.partition("=")
    metric = metric.strip().lower()
    if metric not in METRICS:
        raise AmcError(f"unknown budget metric {metric!r} in {target!r}; valid: {', '.join(METRICS)}")
    try:
        ratio = float(value)
    except ValueError:
        raise AmcError(f"budget ratio {value!r} in {target!r} is not a number; pass e.g. {metric}=0.5") from None
    if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
        raise AmcError(f"budget ratio {ratio} in {target!r} must be in (0, 1] (a fraction of the original)")
    return metric, ratio


def checkpoint_record(path: str | Path) -> dict[str, str]:
    """A policy's ``checkpoint`` block: the path as given and the file's sha256 (hex)."""
    return {"path": str(path), "sha256": file_sha256(Path(path).expanduser())}


def data_record(splits: Any, *, data_dir: str | Path | None, val_size: int | float | None) -> dict[str, Any]:
    """A policy's ``data`` block: the :func:`amc.data.get_dataset` arguments as given (``data_dir``,
    ``val_size``) and the holdout seed and split sizes of ``splits`` (what identifies the val images)."""
    return {"dataset": splits.name, "data_dir": None if data_dir is None else str(data_dir), "val_size": val_size,
            "seed": int(splits.info.get("seed", 0)),
            "sizes": {name: len(splits.split(name)) for name in ("train", "val", "test")}}


@dataclass
class GroupDecision:
    """Kept output channels of one prunable group (all its layers share them)."""

    layers: list[str]
    keep_ratio: float
    channels: int
    total: int

    def __post_init__(self) -> None:
        if not self.layers:
            raise AmcError("policy group has no layers")
        if not (0.0 < float(self.keep_ratio) <= 1.0):
            raise AmcError(f"policy group {self.layers[0]!r}: keep_ratio {self.keep_ratio} must be in (0, 1]")
        if not (1 <= int(self.channels) <= int(self.total)):
            raise AmcError(
                f"policy group {self.layers[0]!r}: channels {self.channels} must be in [1, total={self.total}]"
            )


@dataclass
class LayerDecision:
    """Per-layer quantization / unstructured sparsity (``None`` = float / dense)."""

    name: str
    kind: str = "conv"
    w_bits: int | None = None
    a_bits: int | None = None
    sparsity: float | None = None

    def __post_init__(self) -> None:
        for key in ("w_bits", "a_bits"):
            bits = getattr(self, key)
            if bits is not None and (isinstance(bits, bool) or not (isinstance(bits, int) and 1 <= bits <= 32)):
                raise AmcError(f"policy layer {self.name!r}: {key}={bits!r} must be an integer in 1..32 or null")
        if self.sparsity is not None and not (0.0 <= float(self.sparsity) < 1.0):
            raise AmcError(f"policy layer {self.name!r}: sparsity {self.sparsity} must be in [0, 1)")


@dataclass
class Scoring:
    """How the search built and scored a policy's model (:func:`amc.compress.draw_inputs`, the env's
    evaluation), so that ``amc apply`` rebuilds and re-measures it exactly.

    Attributes:
        proxy: what was done to the compressed model before scoring (:mod:`amc.proxies`: ``vanilla``,
            ``bn``, ``reconstruct``, ``reconstruct+bn``, ``ft:K``; ``auto`` is resolved before recording).
        calibration_size: train images of the proxy (``splits.calibration_batches(1, calibration_size,
            calibration_seed)``), >= 1; activation ranges use ``calibration_batches(2, 128, calibration_seed)``.
        calibration_seed: seed of those draws, of ``random`` importance and of the sampled reconstruction
            positions (the :class:`amc.pruning.Pruner`'s seed).
        eval_precision: ``fp32``, or the ``bf16`` / ``fp16`` autocast the val top-1 was measured under.
        eval_batch_size: batch size of that evaluation (``None``: not recorded).
        val_images: how many val images (the split's first) were scored (``None``: not recorded).
    """

    proxy: str = "vanilla"
    calibration_size: int = 256
    calibration_seed: int = 0
    eval_precision: str = "fp32"
    eval_batch_size: int | None = None
    val_images: int | None = None

    def __post_init__(self) -> None:
        from amc.proxies import parse_proxy
        from amc.training import PRECISIONS

        self.proxy = parse_proxy(self.proxy).name
        if self.proxy == "auto":
            raise AmcError("policy field 'scoring.proxy' is 'auto'; a policy records the proxy it was scored with")
        for key, lo in (("calibration_size", 1), ("calibration_seed", 0), ("eval_batch_size", 1), ("val_images", 0)):
            value = getattr(self, key)
            if value is None and key in ("eval_batch_size", "val_images"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise AmcError(f"policy field 'scoring.{key}' is {value!r}; it must be an integer >= {lo}")
        if self.eval_precision not in PRECISIONS:
            raise AmcError(f"policy field 'scoring.eval_precision' is {self.eval_precision!r}; valid: "
                           f"{', '.join(PRECISIONS)}")

    @classmethod
    def from_dict(cls, d: Any) -> Scoring:
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict):
            raise AmcError("policy field 'scoring' must be an object")
        if set(d) - names:
            raise AmcError(f"policy field 'scoring' has unknown key(s) {sorted(set(d) - names)}; valid: "
                           f"{', '.join(sorted(names))}")
        return cls(**d)


@dataclass
class Policy:
    """A compression policy for one model (see the module docstring for the JSON layout)."""

    model: dict[str, Any]
    mode: str = "prune"
    granularity: str = "channel"
    budget: dict[str, Any] = field(default_factory=dict)
    pruning: dict[str, Any] = field(default_factory=dict)
    groups: list[GroupDecision] = field(default_factory=list)
    layers: list[LayerDecision] = field(default_factory=list)
    achieved: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    scoring: Scoring = field(default_factory=Scoring)

    def __post_init__(self) -> None:
        for key, valid in (("mode", MODES), ("granularity", GRANULARITIES)):
            value = getattr(self, key)
            if value not in valid:
                raise AmcError(f"policy field {key!r}: {value!r} is not one of {', '.join(valid)}")
        if not isinstance(self.model, dict) or "name" not in self.model:
            raise AmcError("policy field 'model' must be a model spec with at least a 'name'")
        old = [k for k in _V1_SCORING_KEYS if k in self.pruning]
        if old:
            raise AmcError(f"policy field 'pruning' holds {', '.join(old)}: since version 2 the proxy and its "
                           "calibration are recorded in 'scoring' (amc.policy.Scoring)")
        for key in ("checkpoint", "data"):
            if not isinstance(getattr(self, key), dict):
                raise AmcError(f"policy field {key!r} must be an object")
        path, sha = self.checkpoint.get("path"), self.checkpoint.get("sha256")
        if (path is not None and not isinstance(path, str)) or (sha is not None and not isinstance(sha, str)):
            raise AmcError("policy field 'checkpoint' must be {\"path\": string, \"sha256\": hex string}")

    # ----------------------------------------------------------------- views
    @property
    def keep_ratios(self) -> list[float]:
        """Per-group keep ratios, in group order."""
        return [g.keep_ratio for g in self.groups]

    def group_by_layer(self) -> dict[str, GroupDecision]:
        return {name: g for g in self.groups for name in g.layers}

    def bits(self) -> tuple[dict[str, int | None], dict[str, int | None]]:
        """``(w_bits, a_bits)`` dicts by layer name."""
        return ({ly.name: ly.w_bits for ly in self.layers}, {ly.name: ly.a_bits for ly in self.layers})

    @property
    def has_bits(self) -> bool:
        return any(ly.w_bits is not None or ly.a_bits is not None for ly in self.layers)

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": copy.deepcopy(self.model),
            "checkpoint": dict(self.checkpoint),
            "data": copy.deepcopy(self.data),
            "mode": self.mode,
            "granularity": self.granularity,
            "budget": dict(self.budget),
            "pruning": dict(self.pruning),
            "scoring": asdict(self.scoring),
            "groups": [
                {"layers": list(g.layers), "keep_ratio": round(float(g.keep_ratio), 6), "channels": int(g.channels),
                 "total": int(g.total)}
                for g in self.groups
            ],
            "layers": [
                {"name": ly.name, "kind": ly.kind, "w_bits": ly.w_bits, "a_bits": ly.a_bits,
                 "sparsity": None if ly.sparsity is None else round(float(ly.sparsity), 6)}
                for ly in self.layers
            ],
            "achieved": dict(self.achieved),
            "accuracy": dict(self.accuracy),
            "search": dict(self.search),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Policy:
        """Validate and load; a bad document raises :class:`AmcError` naming the bad field."""
        if not isinstance(d, dict):
            raise AmcError("policy must be a JSON object")
        if d.get("format") != FORMAT:
            raise AmcError(f"policy field 'format' is {d.get('format')!r}, expected {FORMAT!r} (is this an amc policy?)")
        if d.get("version") not in READ_VERSIONS or isinstance(d.get("version"), bool):
            raise AmcError(f"policy field 'version' is {d.get('version')!r}; this amc reads versions "
                           f"{' and '.join(map(str, READ_VERSIONS))}")
        if d["version"] == 1:
            d = _upgrade_v1(d)
        for key, typ in (("model", dict), ("groups", list), ("layers", list)):
            if not isinstance(d.get(key), typ):
                raise AmcError(f"policy field {key!r} is missing or not a {typ.__name__}")
        groups = []
        for i, g in enumerate(d["groups"]):
            try:
                groups.append(GroupDecision(layers=list(g["layers"]), keep_ratio=float(g["keep_ratio"]),
                                            channels=int(g["channels"]), total=int(g["total"])))
            except (KeyError, TypeError, ValueError) as e:
                if isinstance(e, AmcError):
                    raise
                raise AmcError(f"policy field 'groups[{i}]' is malformed ({e!r}); needs layers, keep_ratio, channels, total") from None
        layers = []
        for i, ly in enumerate(d["layers"]):
            try:
                layers.append(LayerDecision(name=str(ly["name"]), kind=str(ly.get("kind", "conv")),
                                            w_bits=ly.get("w_bits"), a_bits=ly.get("a_bits"),
                                            sparsity=ly.get("sparsity")))
            except (KeyError, TypeError) as e:
                raise AmcError(f"policy field 'layers[{i}]' is malformed ({e!r}); needs at least 'name'") from None
        return cls(
            model=d["model"], mode=d.get("mode", "prune"), granularity=d.get("granularity", "channel"),
            budget=dict(d.get("budget") or {}), pruning=dict(d.get("pruning") or {}), groups=groups,
            layers=layers, achieved=dict(d.get("achieved") or {}), accuracy=dict(d.get("accuracy") or {}),
            search=dict(d.get("search") or {}), checkpoint=copy.deepcopy(_block(d, "checkpoint")),
            data=copy.deepcopy(_block(d, "data")), scoring=Scoring.from_dict(_block(d, "scoring")),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Policy:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise AmcError(f"policy is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        """Write atomically (a reader never sees half a file)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        path = Path(path)
        if not path.is_file():
            raise AmcError(f"policy file {str(path)!r} does not exist (a search writes RUN_DIR/best_policy.json)")
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise AmcError(f"policy file {str(path)!r} is not a text (JSON) file; pass a search's "
                           "RUN_DIR/best_policy.json") from None
        except AmcError as e:
            raise AmcError(f"policy file {str(path)!r}: {e}; pass a search's RUN_DIR/best_policy.json") from None


def _block(d: dict[str, Any], key: str) -> Any:
    """A block of a version-2 document: ``{}`` when absent or null (checked by its reader)."""
    return {} if d.get(key) is None else d[key]


def _upgrade_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 document in the version-2 layout: ``pruning``'s proxy and calibration and
    ``accuracy``'s precision and val images move to ``scoring``. A policy from before the proxies is
    ``reconstruct`` or ``vanilla`` after its ``reconstruct`` flag, its calibration seed the search's."""
    pruning = dict(d.get("pruning") or {})
    accuracy = dict(d.get("accuracy") or {})
    reconstruct = pruning.pop("reconstruct", False)
    proxy = pruning.pop("proxy", None) or ("reconstruct" if reconstruct else "vanilla")
    search_seed = (d.get("search") or {}).get("seed") if isinstance(d.get("search"), dict) else None
    scoring = {"proxy": proxy, "calibration_size": pruning.pop("calibration_size", 256),
               "calibration_seed": pruning.pop("calibration_seed", search_seed) or 0,
               "eval_precision": accuracy.pop("eval_precision", "fp32"), "val_images": accuracy.pop("val_images", None)}
    return {**d, "version": 2, "pruning": pruning, "accuracy": accuracy, "scoring": scoring}
