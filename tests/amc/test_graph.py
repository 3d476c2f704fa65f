"""Layer graph: compressible layers in execution order and prunable channel groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from amc.errors import AmcError
from amc.graph import LayerGraph
from amc.models import MODELS, ModelSpec, build_model, example_input
from tests._tiny_models import TinyDenseNet, TinyGrouped


def _graph_of(name: str, size: int = 32) -> tuple[torch.nn.Module, LayerGraph]:
    spec = ModelSpec(name, num_classes=10, in_channels=3, image_size=(size, size))
    model = build_model(spec)
    return model, LayerGraph.build(model, example_input(spec))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_has_layers_and_groups(name: str) -> None:
    model, g = _graph_of(name, 16)
    assert [ly.index for ly in g.layers] == list(range(len(g.layers)))
    assert g.groups, "every registered model has something to prune"
    classifier = g.layers[-1].name
    for grp in g.groups:
        assert classifier not in grp.out_layers  # the classifier's outputs are never pruned
        assert grp.channels >= 1
        assert grp.leader == grp.out_layers[0]
    assert all(ly.macs > 0 and ly.params > 0 for ly in g.layers)
    # the network input is never a pruned dimension
    first = g.layers[0].name
    assert all(first not in grp.in_layers for grp in g.groups)


def test_resnet20_layers_and_residual_groups() -> None:
    _, g = _graph_of("resnet20")
    convs = [ly for ly in g.layers if ly.kind == "conv"]
    assert len(convs) >= 19 and g.layers[-1].kind == "linear"
    assert g.layers[0].in_size == (32, 32) and g.layers[0].out_channels == 16
    assert abs(g.total_macs - 41e6) / 41e6 < 0.03
    # stage 1's residual stream: the stem and every block's second conv share one group
    stream = max(g.groups, key=lambda grp: len(grp.out_layers))
    assert len(stream.out_layers) >= 3
    # the inner conv of every block is its own group (one decision per block)
    inner = [grp for grp in g.groups if len(grp.out_layers) == 1]
    assert len(inner) == 9


def test_layer_shapes_and_macs_by_hand() -> None:
    _, g = _graph_of("resnet20")
    ly = g.layers[1]  # layer1.0.conv1: 16 -> 16, 3x3 at 32x32
    assert (ly.in_channels, ly.out_channels, ly.kernel, ly.stride) == (16, 16, (3, 3), (1, 1))
    assert ly.macs == 16 * 16 * 9 * 32 * 32
    strided = [x for x in g.layers if x.stride == (2, 2)]
    assert strided and all(x.out_size[0] * 2 == x.in_size[0] for x in strided)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg11_bn"])
def test_torchvision_models(name: str) -> None:
    model = getattr(torchvision.models, name)(num_classes=10)
    g = LayerGraph.build(model, torch.randn(1, 3, 64, 64))
    assert len(g.groups) >= 8
    if name == "mobilenet_v2":
        dw = [ly for ly in g.layers if ly.kind == "depthwise"]
        assert len(dw) == 17
        # a depthwise conv is pruned together with the expansion conv that feeds it
        for ly in dw:
            grp = next(grp for grp in g.groups if ly.name in grp.out_layers)
            assert len(grp.out_layers) == 2


def test_concatenation_groups() -> None:
    model = TinyDenseNet()
    g = LayerGraph.build(model, model.example_inputs())
    by_leader = {grp.leader: grp for grp in g.groups}
    # the stem's channels reach block1, block2 and trans through the concatenations
    assert set(by_leader["stem"].in_layers) == {"block1.0", "block2.0", "trans"}
    assert set(by_leader["block1.0"].in_layers) == {"block2.0", "trans"}
    item = next(it for it in by_leader["block1.0"].items if it.module == "trans")
    assert item.idxs.min() == 8  # block1's channels sit after the stem's 8 in the concatenation


def test_grouped_conv_is_pruned_in_slots_and_depthwise_follows() -> None:
    model = TinyGrouped()
    g = LayerGraph.build(model, model.example_inputs())
    assert {ly.name: ly.kind for ly in g.layers} == {"c1": "conv", "g": "grouped", "dw": "depthwise", "pw": "conv",
                                                     "fc": "linear"}
    by_leader = {grp.leader: grp for grp in g.groups}
    assert "fc" not in {n for grp in g.groups for n in grp.out_layers}
    # c1's 8 outputs feed g (2 groups of 4): slot p is input p of both groups, channels {p, p + 4}
    c1 = by_leader["c1"]
    assert (c1.unit, c1.channels, c1.in_layers) == (2, 4, ["g"])
    assert c1.slot_of.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # g's outputs, the depthwise conv and pw's inputs: again 2 slots of 4 (g's groups), dw follows
    grp = by_leader["g"]
    assert (grp.unit, grp.channels, grp.out_layers, grp.in_layers) == (2, 4, ["g", "dw"], ["pw"])
    assert by_leader["pw"].unit == 1 and by_leader["pw"].slot_of is None


class _TwoGroupings(torch.nn.Module):
    """One tensor read by a conv with 2 groups and one with 3: slots join positions of both layouts."""

    def __init__(self) -> None:
        super().__init__()
        self.c = torch.nn.Conv2d(3, 12, 1)
        self.a = torch.nn.Conv2d(12, 6, 3, padding=1, groups=2)
        self.b = torch.nn.Conv2d(12, 6, 3, padding=1, groups=3)
        self.fc = torch.nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        return self.fc(torch.cat([self.a(y), self.b(y)], 1).mean((2, 3)))


def test_two_groupings_of_one_tensor_share_slots_that_fit_both() -> None:
    g = LayerGraph.build(_TwoGroupings(), torch.randn(1, 3, 8, 8))
    c = next(grp for grp in g.groups if grp.leader == "c")
    # positions p (mod 6 for groups=2) and p (mod 4 for groups=3) joined: removing a slot must take
    # the same number of channels from every group of both convs -> slots of lcm-compatible size
    sizes = np.bincount(c.slot_of)
    assert (sizes == sizes[0]).all() and c.unit * c.channels == 12
    for groups in (2, 3):
        per = 12 // groups
        for s in range(c.channels):
            members = np.flatnonzero(c.slot_of == s)
            assert np.ptp(np.bincount(members // per, minlength=groups)) == 0


def test_channel_shuffle_is_kept_whole_and_named_once(caplog: pytest.LogCaptureFixture) -> None:
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    with caplog.at_level("WARNING", logger="amc.graph"):
        g = LayerGraph.build(model, torch.randn(1, 3, 32, 32))
    lines = [r.getMessage() for r in caplog.records if "kept whole" in r.getMessage()]
    assert len(lines) == 1  # one line for the model
    named = [n for part in lines[0].split(" -- ", 1)[1].split("; ") for n in part.rsplit(": ", 1)[1].split(", ")]
    whole = set(named)
    assert "shuffle" in lines[0] and len(named) == len(whole)  # each layer named once
    assert "stage2.1.branch2.5" in whole  # the branch output, shuffled into the next block
    pruned = {n for grp in g.groups for n in grp.out_layers}
    assert "stage2.1.branch2.0" in pruned and "conv5.0" in pruned  # a branch's inner channels, the last conv
    assert not whole & pruned


def test_shared_layer_is_a_clear_error() -> None:
    class Shared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.c(self.c(x)).mean((2, 3)))

    with pytest.raises(AmcError, match="runs twice"):
        LayerGraph.build(Shared(), torch.randn(1, 3, 8, 8))


def test_untraceable_input_says_the_shape() -> None:
    model = build_model("lenet5", num_classes=10, in_channels=1, image_size=(28, 28))
    with pytest.raises(AmcError, match=r"\(1, 3, 28, 28\)"):
        LayerGraph.build(model, torch.randn(1, 3, 28, 28))


class _UnevenConcatIntoGroups(torch.nn.Module):
    """8 + 4 concatenated channels read by a conv with 3 groups of 4: branch a fills groups 0 and 1 only,
    so no slot of a's channels can leave every convolution group."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.g = torch.nn.Conv2d(12, 6, 3, padding=1, groups=3)
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.g(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


def test_grouping_no_slot_layout_fits_is_kept_whole(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="amc.graph"):
        g = LayerGraph.build(_UnevenConcatIntoGroups(), torch.randn(1, 3, 8, 8))
    pruned = {n for grp in g.groups for n in grp.out_layers}
    assert "a" not in pruned and "b" not in pruned and "g" in pruned
    assert "kept whole" in caplog.text and "a, b" in caplog.text


@pytest.mark.parametrize(("shapes", "preserving"), [
    (((1, 8, 4, 4), (1, 128)), True),  # flatten before a classifier
    (((1, 8), (1, 8, 1, 1)), True),  # unflatten (an SE gate built from Linear layers)
    (((1, 8, 4, 4), (1, 8, 16)), True),  # spatial dims only
    (((1, 8, 4, 4), (1, 2, 4, 4, 4)), False),  # channel shuffle: split channels into (groups, per group)
    (((1, 2, 4, 4, 4), (1, 8, 4, 4)), False),  # ... and merge them back after the transpose
])
def test_reshapes_that_mix_channels_are_recognised(shapes, preserving: bool) -> None:
    from amc.graph import _channel_preserving

    assert _channel_preserving(shapes) is preserving
