"""Model zoo contract: every registered model builds, follows the dataset and has the right size."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from amc.errors import AmcError
from amc.models import MODELS, ModelSpec, build_model, count_params, example_input, resolve_spec

SHAPES = [(3, (32, 32)), (1, (28, 28)), (1, (8, 8))]


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates per sample of every Conv2d/Linear, counted with forward hooks."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += out[0].numel() * k
        else:
            total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("in_channels,image_size", SHAPES)
def test_every_model_follows_the_dataset(name: str, in_channels: int, image_size: tuple[int, int]) -> None:
    spec = ModelSpec(name, num_classes=7, in_channels=in_channels, image_size=image_size)
    model = build_model(spec)
    x = example_input(spec, batch=2)
    assert x.shape == (2, in_channels, *image_size)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and linears[-1].out_features == 7
    # no weight sharing: every parameter belongs to exactly one module
    ids = [id(p) for m in model.modules() for p in m.parameters(recurse=False)]
    assert len(ids) == len(set(ids))
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize(
    "name,params,macs",
    [("resnet20", 0.27e6, 41e6), ("resnet56", 0.85e6, 125e6)],
)
def test_cifar_resnet_size(name: str, params: float, macs: float) -> None:
    spec = ModelSpec(name, num_classes=10, in_channels=3, image_size=(32, 32))
    model = build_model(spec)
    assert count_params(model) == pytest.approx(params, rel=0.03)
    assert count_macs(model, example_input(spec)) == pytest.approx(macs, rel=0.03)


def test_resnet_projection_shortcut_only_on_shape_change() -> None:
    model = build_model("resnet20")
    shortcuts = [m.shortcut for m in model.modules() if hasattr(m, "shortcut")]
    assert len(shortcuts) == 9
    assert sum(isinstance(s, nn.Sequential) for s in shortcuts) == 2
    plain = build_model("plain20")
    assert all(m.shortcut is None for m in plain.modules() if hasattr(m, "shortcut"))


def test_spec_roundtrip_and_validation() -> None:
    spec = ModelSpec("ResNet20", num_classes=100, in_channels=1, image_size=28, kwargs={"width_mult": 0.5})
    assert spec.name == "resnet20" and spec.image_size == (28, 28)
    d = spec.to_dict()
    assert ModelSpec.from_dict(d) == spec
    assert resolve_spec(d, num_classes=5).num_classes == 5
    assert resolve_spec("mlp").name == "mlp"
    with pytest.raises(AmcError):
        ModelSpec("resnet20", num_classes=0)
    with pytest.raises(AmcError):
        ModelSpec("resnet20", image_size=(0, 3))
    with pytest.raises(AmcError, match="unknown model spec keys"):
        ModelSpec.from_dict({"name": "mlp", "depth": 3})
    half = build_model(spec)
    assert half.conv1.out_channels == 8


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet20"):
        build_model("resnet21")
    with pytest.raises(AmcError, match="resnet18"):
        build_model("torchvision:resnet_nope")
    with pytest.raises(AmcError, match="cannot import"):
        build_model("no_such_pkg_amc.models:net")
    with pytest.raises(AmcError, match="no attribute"):
        build_model("amc.models:nope")


def test_torchvision_model() -> None:
    model = build_model("torchvision:resnet18", num_classes=5, in_channels=1, image_size=32)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 5)


def test_module_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("amc_test_userzoo")

    def tiny(num_classes: int, width: int = 4) -> nn.Module:  # no in_channels: not passed
        return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    mod.tiny = tiny
    monkeypatch.setitem(sys.modules, "amc_test_userzoo", mod)
    model = build_model(ModelSpec("amc_test_userzoo:tiny", num_classes=3, kwargs={"width": 6}))
    assert model[0].out_channels == 6
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
