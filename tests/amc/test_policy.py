"""The policy document: round trip and every documented validation error (docs/policy.md)."""

from __future__ import annotations

import copy
import json

import pytest

from amc.errors import AmcError
from amc.policy import FORMAT, VERSION, GroupDecision, LayerDecision, Policy, Scoring, parse_target

SPEC = {"name": "lenet5", "num_classes": 10, "in_channels": 1, "image_size": [8, 8], "kwargs": {}}


def _policy() -> Policy:
    return Policy(
        model=dict(SPEC), mode="joint", granularity="channel",
        budget={"metric": "bitops", "ratio": 0.1, "target": "bitops=0.1"},
        pruning={"importance": "l1", "round_to": 1, "lbound": 0.2},
        scoring=Scoring(proxy="reconstruct", calibration_size=256, calibration_seed=3, eval_batch_size=512,
                        val_images=300),
        checkpoint={"path": "runs/lenet/final.pt", "sha256": "ab" * 32},
        data={"dataset": "digits", "data_dir": None, "val_size": 300, "seed": 0,
              "sizes": {"train": 1197, "val": 300, "test": 300}},
        groups=[GroupDecision(["conv1", "conv2"], 0.5, 3, 6), GroupDecision(["conv2", "fc1"], 0.75, 12, 16)],
        layers=[LayerDecision("conv1", "conv", 8, None), LayerDecision("conv2", "conv", 4, 6),
                LayerDecision("fc1", "linear", 3, 5, None)],
        achieved={"bitops_ratio": 0.0987, "macs_ratio": 0.41}, accuracy={"base_val_top1": 91.3, "val_top1": 80.0},
        search={"agent": "ddpg", "episode": 12, "episodes": 300, "seed": 3})


def _doc() -> dict:
    return _policy().to_dict()


def test_round_trip_dict_json_and_file(tmp_path):
    pol = _policy()
    doc = pol.to_dict()
    assert doc["format"] == FORMAT == "amc-policy" and doc["version"] == VERSION == 2
    again = Policy.from_dict(json.loads(json.dumps(doc)))
    assert again == pol
    assert Policy.from_json(pol.to_json()) == pol
    path = pol.save(tmp_path / "p.json")
    loaded = Policy.load(path)
    assert loaded == pol and loaded.to_dict() == doc
    assert loaded.keep_ratios == [0.5, 0.75]
    assert loaded.bits() == ({"conv1": 8, "conv2": 4, "fc1": 3}, {"conv1": None, "conv2": 6, "fc1": 5})
    assert loaded.has_bits and loaded.group_by_layer()["fc1"].channels == 12


def test_optional_blocks_default_to_empty():
    doc = {"format": FORMAT, "version": VERSION, "model": {"name": "mlp"}, "groups": [], "layers": [{"name": "fc1"}]}
    pol = Policy.from_dict(doc)
    assert (pol.mode, pol.granularity, pol.budget, pol.pruning, pol.search) == ("prune", "channel", {}, {}, {})
    assert pol.layers[0].kind == "conv" and pol.layers[0].w_bits is None and not pol.has_bits


def _with(path: str, value, *, delete: bool = False) -> dict:
    doc = copy.deepcopy(_doc())
    keys = path.split(".")
    node = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if delete:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (_with("format", "amc-checkpoint"), "field 'format' is 'amc-checkpoint', expected 'amc-policy'"),
    (_with("format", None, delete=True), "field 'format' is None"),
    (_with("version", 3), "field 'version' is 3; this amc reads versions 1 and 2"),
    (_with("version", "1"), "field 'version'"),
    (_with("model", None, delete=True), "field 'model' is missing or not a dict"),
    (_with("groups", None, delete=True), "field 'groups' is missing or not a list"),
    (_with("layers", {"conv1": 8}), "field 'layers' is missing or not a list"),
    (_with("model", {"num_classes": 10}), "field 'model' must be a model spec with at least a 'name'"),
    (_with("mode", "shrink"), "field 'mode': 'shrink' is not one of prune, quant, joint"),
    (_with("granularity", "block"), "field 'granularity': 'block' is not one of channel, fine"),
    (_with("groups.0.keep_ratio", 0.0), "group 'conv1': keep_ratio 0.0 must be in \\(0, 1\\]"),
    (_with("groups.1.keep_ratio", 1.5), "group 'conv2': keep_ratio 1.5 must be in \\(0, 1\\]"),
    (_with("groups.0.channels", 7), "group 'conv1': channels 7 must be in \\[1, total=6\\]"),
    (_with("groups.0.channels", 0), "channels 0 must be in \\[1, total=6\\]"),
    (_with("groups.0.total", None, delete=True), "field 'groups\\[0\\]' is malformed"),
    (_with("groups.1.layers", []), "policy group has no layers"),
    (_with("layers.0.w_bits", 0), "layer 'conv1': w_bits=0 must be an integer in 1..32 or null"),
    (_with("layers.1.a_bits", 33), "layer 'conv2': a_bits=33 must be an integer in 1..32"),
    (_with("layers.1.w_bits", 4.5), "layer 'conv2': w_bits=4.5 must be an integer"),
    (_with("layers.2.w_bits", "8"), "layer 'fc1': w_bits='8' must be an integer"),
    (_with("layers.2.sparsity", 1.0), "layer 'fc1': sparsity 1.0 must be in \\[0, 1\\)"),
    (_with("layers.0.name", None, delete=True), "field 'layers\\[0\\]' is malformed"),
    ([], "policy must be a JSON object"),
])
def test_bad_documents_name_the_bad_field(doc, message):
    with pytest.raises(AmcError, match=message):
        Policy.from_dict(doc)


def test_bad_files_give_the_documented_errors(tmp_path):
    with pytest.raises(AmcError, match="does not exist .*best_policy.json"):
        Policy.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "amc-policy", "version": 1, ')  # truncated
    with pytest.raises(AmcError, match="policy is not valid JSON"):
        Policy.load(bad)
    bad.write_text(json.dumps(_with("groups.0.keep_ratio", -1)))
    with pytest.raises(AmcError, match="keep_ratio -1"):
        Policy.load(bad)


def test_constructors_validate_too():
    with pytest.raises(AmcError, match="keep_ratio"):
        GroupDecision(["conv1"], 1.2, 6, 6)
    with pytest.raises(AmcError, match="w_bits=True|w_bits=0"):
        LayerDecision("conv1", w_bits=0)
    with pytest.raises(AmcError, match="'mode'"):
        Policy(model=dict(SPEC), mode="quantize")


@pytest.mark.parametrize(("text", "expected"), [("macs=0.5", ("macs", 0.5)), (" Params = 1 ", ("params", 1.0)),
                                                ("bitops=0.03", ("bitops", 0.03))])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize(("text", "message"), [("0.5", "must look like METRIC=RATIO"), ("flops=0.5", "unknown budget"),
                                               ("macs=half", "not a number"), ("macs=0", "must be in \\(0, 1\\]"),
                                               ("size=1.5", "must be in \\(0, 1\\]")])
def test_parse_target_errors(text, message):
    with pytest.raises(AmcError, match=message):
        parse_target(text)
