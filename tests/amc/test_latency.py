"""Measured latency (``torch.utils.benchmark.Timer``) and the per-layer latency table."""

from __future__ import annotations

import pytest
import torch

from amc.errors import AmcError
from amc.latency import LatencyTable, measure_latency
from amc.models import build_model
from amc.pruning import Pruner


def test_measure_latency_reports_a_consistent_distribution() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).train()
    r = measure_latency(model, (3, 16, 16), batch_size=2, threads=1, warmup=2, repeats=10)
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms and r.mean_ms > 0
    assert r.batch_size == 2 and r.threads == 1 and r.device == "cpu" and r.repeats >= 1
    assert not model.training  # timed in eval mode
    assert torch.get_num_threads() >= 1


def test_measure_latency_rejects_bad_counts() -> None:
    with pytest.raises(AmcError, match="must be >= 1"):
        measure_latency(torch.nn.Identity(), (3,), batch_size=0)


def test_latency_table_predicts_the_full_model_and_round_trips(tmp_path) -> None:
    model = build_model("lenet5", num_classes=10, in_channels=1, image_size=(28, 28)).eval()
    pruner = Pruner(model, torch.randn(1, 1, 28, 28))
    graph = pruner.graph
    table = LatencyTable.build(model, graph, threads=1, grid=(0.5, 1.0), repeats=5, warmup=1)
    ins = [ly.in_channels for ly in graph.layers]
    outs = [ly.out_channels for ly in graph.layers]
    full = table.predict(ins, outs)
    # unpruned: the layers' own times plus the measured rest, i.e. the full model's time (when the rest >= 0)
    assert full == pytest.approx(max(table.meta["full_model_ms"], float(table.table[:, -1, -1].sum())))
    # on the grid the prediction is the table's cells, plus the rest scaled by the kept output channels
    half = table.predict([c / 2 for c in ins], [c / 2 for c in outs])
    assert half == pytest.approx(float(table.table[:, 0, 0].sum()) + 0.5 * table.overhead_ms)
    loaded = LatencyTable.load(table.save(tmp_path / "lat.json"))
    assert loaded.predict(ins, outs) == pytest.approx(full)
    with pytest.raises(AmcError, match="not an amc latency table"):
        (tmp_path / "x.json").write_text("{}")
        LatencyTable.load(tmp_path / "x.json")
