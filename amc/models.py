"""Model zoo: CIFAR-style networks by name, torchvision models and the user's own factories.

Every built-in model

- takes ``num_classes``, ``in_channels`` and ``image_size`` (H, W) so that it follows the dataset
  (8x8 digits, 28x28 Fashion-MNIST, 32x32 CIFAR-10 and larger all work);
- registers each Conv2d / Linear as its own named submodule (no weight sharing, no functional
  convolutions) and uses ``nn.ReLU(inplace=False)`` modules and out-of-place residual adds, so that
  forward hooks and Torch-Pruning's ``DependencyGraph`` see every layer and every coupling;
- ends with an ``nn.Linear`` classifier.

Names understood by :func:`build_model`:

- a built-in name from :data:`MODELS` (``resnet20/32/44/56/110``, ``plain20``, ``vgg11``, ``vgg16``,
  ``mobilenetv2``, ``lenet5``, ``mlp``);
- ``torchvision:<name>``, e.g. ``torchvision:resnet18`` (random init, ``weights=None``; when the
  dataset is not RGB the first convolution is replaced by one with ``in_channels`` inputs);
- ``package.module:factory``: the module is imported and ``factory`` is called with those of
  ``num_classes``, ``in_channels``, ``image_size`` and the spec's ``kwargs`` that it accepts.

Sources: CIFAR ResNets and the plain baseline follow He et al., "Deep Residual Learning for Image
Recognition" (CVPR 2016, section 4.2); VGG follows Simonyan & Zisserman (2015) with the usual CIFAR
widths and BatchNorm; MobileNetV2 follows Sandler et al. (CVPR 2018) with the common CIFAR stem
(stride 1 in the first convolution and in the second stage); LeNet-5 follows LeCun et al. (1998)
with ReLU and max-pooling.
"""

from __future__ import annotations

import inspect
import logging
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any

import torch
from torch import nn

from amc._registry import Registry
from amc.errors import AmcError
from amc.utils import as_size

logger = logging.getLogger(__name__)

__all__ = [
    "MODELS",
    "ModelSpec",
    "build_model",
    "example_input",
    "resolve_spec",
    "count_params",
]

ModelFactory = Callable[..., nn.Module]

#: Built-in architectures. A factory is called as ``factory(num_classes=, in_channels=, image_size=,
#: **kwargs)`` and returns a freshly initialised ``nn.Module``.
MODELS: Registry[ModelFactory] = Registry("model")


# --------------------------------------------------------------------------------------------------
# spec


@dataclass
class ModelSpec:
    """Everything needed to rebuild a freshly initialised model.

    Attributes:
        name: a name from :data:`MODELS`, ``torchvision:<name>`` or ``package.module:factory``.
        num_classes: outputs of the final ``nn.Linear`` (>= 1); follows the dataset.
        in_channels: input image channels (>= 1); follows the dataset.
        image_size: input (H, W) in pixels; models adapt their pooling to it.
        kwargs: extra keyword arguments for the factory (e.g. ``{"width_mult": 0.5}``).
    """

    name: str
    num_classes: int = 10
    in_channels: int = 3
    image_size: tuple[int, int] = (32, 32)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise AmcError(f"model name must be a non-empty string, got {self.name!r}")
        self.name = self.name.strip()
        if ":" not in self.name:
            MODELS.get(self.name)  # ValueError listing the valid names
            self.name = self.name.lower()
        for attr in ("num_classes", "in_channels"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AmcError(f"{attr} must be a positive int, got {v!r}")
        self.image_size = as_size(self.image_size)
        if not isinstance(self.kwargs or {}, Mapping):
            raise AmcError(f"kwargs must be a dict of keyword arguments, got {type(self.kwargs).__name__}")
        self.kwargs = dict(self.kwargs or {})

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-friendly dict (``image_size`` as a list)."""
        return {**asdict(self), "image_size": list(self.image_size)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        valid = [f.name for f in fields(cls)]
        if set(d) - set(valid):
            raise AmcError(f"unknown model spec keys {sorted(set(d) - set(valid))}; valid: {', '.join(valid)}")
        if "name" not in d:
            raise AmcError("a model spec needs a 'name'")
        return cls(**dict(d))

    @classmethod
    def for_data(cls, name: str, data: Any, *, kwargs: dict[str, Any] | None = None) -> ModelSpec:
        """Spec whose classes, channels and image size follow ``data`` (e.g. a ``DatasetSplits``)."""
        return cls(name, int(data.num_classes), int(data.in_channels), tuple(data.image_size), kwargs or {})


def resolve_spec(
    spec: ModelSpec | Mapping[str, Any] | str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | Sequence[int] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> ModelSpec:
    """Turn a spec, a dict or a bare name into a :class:`ModelSpec`; given options override it."""
    if isinstance(spec, ModelSpec):
        base = spec.to_dict()
    elif isinstance(spec, Mapping):
        base = ModelSpec.from_dict(spec).to_dict()
    elif isinstance(spec, str):
        base = {"name": spec}
    else:
        raise AmcError(f"a model spec must be a ModelSpec, a dict or a name, got {type(spec).__name__}")
    overrides = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    base.update({k: v for k, v in overrides.items() if v is not None})
    if kwargs:
        base["kwargs"] = {**base.get("kwargs", {}), **kwargs}
    return ModelSpec.from_dict(base)


def build_model(spec: ModelSpec | Mapping[str, Any] | str, **overrides: Any) -> nn.Module:
    """Build a freshly initialised model (random weights, train mode) from a spec.

    ``overrides`` (``num_classes``, ``in_channels``, ``image_size``, ``kwargs``; see
    :func:`resolve_spec`) override the spec's fields (handy with a bare name:
    ``build_model("resnet20", num_classes=100)``). Unknown names raise ``ValueError`` listing the
    built-in ones; a bad ``torchvision:``/``module:factory`` reference raises ``AmcError``.
    """
    s = resolve_spec(spec, **overrides)
    common = {"num_classes": s.num_classes, "in_channels": s.in_channels, "image_size": s.image_size}
    if s.name.startswith("torchvision:"):
        model = _build_torchvision(s.name.split(":", 1)[1], **common, **s.kwargs)
    elif ":" in s.name:
        model = _build_from_factory(s.name, common, s.kwargs)
    else:
        factory = MODELS.get(s.name)
        try:
            model = factory(**common, **s.kwargs)
        except TypeError as e:
            raise AmcError(f"model {s.name!r}: bad kwargs {s.kwargs}: {e}") from None
    if not isinstance(model, nn.Module):
        raise AmcError(f"model {s.name!r}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


def example_input(spec: ModelSpec | Mapping[str, Any] | str, batch: int = 1) -> torch.Tensor:
    """A deterministic random input ``(batch, in_channels, H, W)`` for tracing ``spec``'s model."""
    s = resolve_spec(spec)
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, s.in_channels, *s.image_size, generator=g)


def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def _init_weights(model: nn.Module) -> None:
    """He (Kaiming) normal init for convolutions, unit/zero BatchNorm, as in He et al. 2016."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _ch(c: int, mult: float) -> int:
    return max(1, int(round(c * mult)))


# --------------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, section 4.2) and the plain baseline


class BasicBlock(nn.Module):
    """3x3-3x3 residual block. Shortcut: identity, or 1x1 conv + BN ("option B") when shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.shortcut: nn.Module | None = nn.Identity() if residual else None
        if residual and (stride != 1 or in_planes != planes):
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)  # out of place: Torch-Pruning traces the add
        return self.relu2(out)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: 3x3 stem, three stages of n blocks (16, 32, 64 channels at
    widths x1), global average pooling, one ``nn.Linear``. ResNet-20: ~0.27 M params, ~41 M MACs at
    32x32; ResNet-56: ~0.86 M params, ~126 M MACs."""

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        width_mult: float = 1.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise AmcError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        widths = [_ch(16, width_mult), _ch(32, width_mult), _ch(64, width_mult)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        in_planes = widths[0]
        for i, w in enumerate(widths):  # the first block of stages 2 and 3 halves the map
            blocks = [BasicBlock(in_planes if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1, residual=residual)
                      for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


for _d in (20, 32, 44, 56, 110):
    MODELS.register(f"resnet{_d}", partial(CifarResNet, _d))
MODELS.register("plain20", partial(CifarResNet, 20, residual=False))  # the "plain" baseline of He et al.


# --------------------------------------------------------------------------------------------------
# VGG (CIFAR widths, BatchNorm)

_VGG_CFG: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG with BatchNorm for small images. A max-pool is skipped once the feature map is 1 pixel,
    so 8x8 inputs work; global average pooling then ``classifier_hidden`` (0: none) and the final
    ``nn.Linear``."""

    def __init__(
        self,
        cfg: Sequence[int | str],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        width_mult: float = 1.0,
        classifier_hidden: int = 0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, h, w = in_channels, *image_size
        for v in cfg:
            if v == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2, 2))
                    h, w = h // 2, w // 2
                continue
            out = _ch(int(v), width_mult)
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=False)]
            c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        hidden = [nn.Linear(c, classifier_hidden), nn.ReLU(inplace=False)] if classifier_hidden else []
        self.classifier = nn.Sequential(*hidden, nn.Linear(classifier_hidden or c, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


for _name, _cfg in _VGG_CFG.items():
    MODELS.register(_name, partial(VGG, _cfg))


# --------------------------------------------------------------------------------------------------
# MobileNetV2 (CIFAR stem)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when shapes match."""

    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=False)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=False),
            nn.Conv2d(hidden, out, 1, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res else out


@MODELS.register("mobilenetv2")
class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs: stride-1 stem and stride-1 second stage (32 -> 32 -> 16 -> 8
    -> 4), ~2.2 M params and ~88 M MACs at width 1 (32x32)."""

    # (expansion t, channels c, repeats n, stride s), Sandler et al. 2018 table 2, CIFAR strides
    CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        width_mult: float = 1.0,
        last_channels: int = 1280,
    ) -> None:
        super().__init__()
        c = _ch(32, width_mult)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU6(inplace=False)
        )
        blocks: list[nn.Module] = []
        for t, ch, n, s in self.CFG:
            out = _ch(ch, width_mult)
            blocks += [InvertedResidual(c if i == 0 else out, out, s if i == 0 else 1, t) for i in range(n)]
            c = out
        self.features = nn.Sequential(*blocks)
        last = _ch(last_channels, max(1.0, width_mult))
        self.head = nn.Sequential(nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=False))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(last, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.features(self.stem(x)))
        return self.classifier(self.flatten(self.avgpool(x)))


# --------------------------------------------------------------------------------------------------
# LeNet-5 and an MLP


@MODELS.register("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling: conv 6@5x5, pool, conv 16@5x5, pool,
    FC 120, FC 84, FC ``num_classes``.

    32x32 inputs use the classic unpadded convolutions (32 -> 28 -> 14 -> 10 -> 5); smaller inputs pad
    a convolution by 2 where it would otherwise shrink the map below 5 pixels (28x28: the MNIST variant
    28 -> 28 -> 14 -> 10 -> 5; 8x8: 8 -> 8 -> 4 -> 4 -> 2). Larger inputs are average-pooled to 5x5
    before the first FC layer.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: tuple[int, int] = (32, 32),
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        (h, w), c = image_size, in_channels
        for i, (out, unpadded_from) in enumerate([(_ch(6, width_mult), 32), (_ch(16, width_mult), 9)], 1):
            pad = 0 if min(h, w) >= unpadded_from else 2
            h, w = h + 2 * pad - 4, w + 2 * pad - 4
            setattr(self, f"conv{i}", nn.Conv2d(c, out, 5, padding=pad))  # conv1, relu1, pool1, conv2, ...
            setattr(self, f"relu{i}", nn.ReLU(inplace=False))
            setattr(self, f"pool{i}", nn.MaxPool2d(2, 2) if min(h, w) >= 2 else nn.Identity())
            if min(h, w) >= 2:
                h, w = h // 2, w // 2
            c = out
        if h > 5 or w > 5:
            h, w = min(h, 5), min(w, 5)
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((h, w))
        else:
            self.avgpool = nn.Identity()
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(c * h * w, 120)
        self.relu3 = nn.ReLU(inplace=False)
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU(inplace=False)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(self.avgpool(x))
        x = self.relu4(self.fc2(self.relu3(self.fc1(x))))
        return self.fc3(x)


@MODELS.register("mlp")
class MLP(nn.Module):
    """Flatten, then ``hidden`` fully connected ReLU layers (default 256, 128), then the classifier."""

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        hidden: Sequence[int] = (256, 128),
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten(1)
        d = in_channels * image_size[0] * image_size[1]
        for i, hdim in enumerate(hidden):
            setattr(self, f"fc{i + 1}", nn.Linear(d, int(hdim)))
            setattr(self, f"relu{i + 1}", nn.ReLU(inplace=False))
            d = int(hdim)
        self.n_hidden = len(hidden)
        self.classifier = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for i in range(self.n_hidden):
            x = getattr(self, f"relu{i + 1}")(getattr(self, f"fc{i + 1}")(x))
        return self.classifier(x)


# --------------------------------------------------------------------------------------------------
# external models


def _build_torchvision(
    name: str, *, num_classes: int, in_channels: int, image_size: tuple[int, int], **kwargs: Any
) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise AmcError(f"unknown torchvision model {name!r}; valid: {', '.join(sorted(available))}")
    kwargs.setdefault("weights", None)
    if name.startswith("vit_") and image_size[0] == image_size[1]:
        kwargs.setdefault("image_size", image_size[0])  # ViTs are built for one input size (224 by default)
    try:
        model = torchvision.models.get_model(name, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise AmcError(f"torchvision:{name}: cannot build with num_classes={num_classes}, {kwargs}: {e}") from None
    if in_channels != 3:
        _replace_first_conv(model, in_channels, name)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int, name: str) -> None:
    """Swap the first Conv2d for a same-shaped one taking ``in_channels`` inputs (e.g. greyscale)."""
    mod_name, mod = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
    if mod is None or mod.groups != 1:
        raise AmcError(f"torchvision:{name}: cannot adapt the first layer to {in_channels} input channels")
    parent, _, attr = mod_name.rpartition(".")
    setattr(model.get_submodule(parent), attr, nn.Conv2d(
        in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
        dilation=mod.dilation, bias=mod.bias is not None, padding_mode=mod.padding_mode))


def _build_from_factory(ref: str, common: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    try:
        factory = pkgutil.resolve_name(ref)
    except ValueError:
        raise AmcError(f"model reference {ref!r} must look like 'package.module:factory'") from None
    except ImportError as e:
        raise AmcError(f"model {ref!r}: cannot import its module ({e}); is it on PYTHONPATH?") from None
    except AttributeError as e:
        raise AmcError(f"model {ref!r}: {e}") from None  # "module 'x' has no attribute 'y'"
    if not callable(factory):
        raise AmcError(f"model {ref!r}: {ref.partition(':')[2]!r} is not callable")
    args = {**common, **kwargs}
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        args = {k: v for k, v in args.items() if k in sig.parameters or k in kwargs}
        if "num_classes" not in sig.parameters:
            logger.warning("model %s: the factory takes no num_classes; its outputs must match the "
                           "dataset's %d classes", ref, common["num_classes"])
    try:
        return factory(**args)
    except TypeError as e:
        raise AmcError(f"model {ref!r}: calling the factory with {sorted(args)} failed: {e}") from None
