"""The compression policy: amc's central artefact, a versioned JSON document.

A policy says, for one model, how many output channels each *prunable group* keeps (coupled layers
share one decision, see :mod:`amc.graph`) and, per compressible layer (by module name), the weight and
activation bit widths or the unstructured sparsity. It also records the model it was found on, the
budget, what was achieved and how it was found, so that ``amc apply`` can rebuild the compressed
model exactly and ``amc.transfer`` can map it onto a sibling model.

Example (abridged)::

    {
      "format": "amc-policy", "version": 1,
      "model": {"name": "resnet20", "num_classes": 10, "in_channels": 3, "image_size": [32, 32]},
      "mode": "prune", "granularity": "channel",
      "budget": {"metric": "macs", "ratio": 0.5},
      "pruning": {"importance": "l1", "reconstruct": false, "round_to": 1},
      "groups": [{"layers": ["conv1", "layer1.0.conv2", ...], "keep_ratio": 0.75, "channels": 12, "total": 16}, ...],
      "layers": [{"name": "conv1", "kind": "conv", "w_bits": null, "a_bits": null, "sparsity": null}, ...],
      "achieved": {"macs_ratio": 0.498, "params_ratio": 0.61},
      "accuracy": {"base_val_top1": 91.2, "val_top1": 84.0},
      "search": {"agent": "ddpg", "episode": 143, "episodes": 300, "seed": 0}
    }
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amc.errors import AmcError
from amc.utils import atomic_write_json

FORMAT = "amc-policy"
VERSION = 1
MODES = ("prune", "quant", "joint")
GRANULARITIES = ("channel", "fine")
METRICS = ("macs", "params", "size", "bitops", "latency")

__all__ = ["Policy", "GroupDecision", "LayerDecision", "parse_target", "FORMAT", "VERSION"]


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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AmcError(f"policy field 'mode': {self.mode!r} is not one of {', '.join(MODES)}")
        if self.granularity not in GRANULARITIES:
            raise AmcError(
                f"policy field 'granularity': {self.granularity!r} is not one of {', '.join(GRANULARITIES)}"
            )
        if not isinstance(self.model, dict) or "name" not in self.model:
            raise AmcError("policy field 'model' must be a model spec with at least a 'name'")

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
            "mode": self.mode,
            "granularity": self.granularity,
            "budget": dict(self.budget),
            "pruning": dict(self.pruning),
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
        if d.get("version") != VERSION:
            raise AmcError(f"policy field 'version' is {d.get('version')!r}; this amc reads version {VERSION}")
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
            search=dict(d.get("search") or {}),
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
