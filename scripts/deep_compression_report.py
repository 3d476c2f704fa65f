#!/usr/bin/env python
"""Collect ``amc finetune --deep-compression`` runs into one JSON (docs/bench/deep-compression.json).

    python scripts/deep_compression_report.py --run "LeNet-300-100=bench_out/dc/mlp-b" \
        --run "LeNet-5=bench_out/dc/lenet5-a" --out docs/bench/deep-compression.json

Per model: ``ratio`` (float32 conv/linear weights / their stored bytes: values, indices and codebooks,
the paper's accounting), ``file_ratio`` (float32 parameters / the whole exported file), ``base_top1``
and ``final_top1`` (test, %), and the per-stage table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amc.errors import AmcError
from amc.utils import atomic_write_json


def _model(name: str, run_dir: Path) -> dict:
    path = run_dir / "deep_compression.json"
    if not path.is_file():
        raise AmcError(f"{path} not found (run amc finetune --deep-compression first)")
    doc = json.loads(path.read_text())
    table = doc["table"]
    if [r["stage"] for r in table] != ["original", "pruned", "quantized", "huffman"]:
        raise AmcError(f"{path}: the run has not finished every stage")
    first, last = table[0], table[-1]
    layers = {ly["name"]: {"density": 1 - (ly.get("sparsity") or 0), "w_bits": ly.get("w_bits")}
              for ly in doc["policy"]["layers"]}
    return {"model": name, "ratio": last["weight_ratio"], "file_ratio": last["ratio"], "base_top1": first["test_top1"],
            "final_top1": last["test_top1"], "float32_bytes": doc["float32_bytes"], "file_bytes": last["file_bytes"],
            "weight_bytes": last["weight_bytes"], "layers": layers, "config": doc["config"],
            "table": [{k: r[k] for k in ("stage", "file_bytes", "ratio", "weight_bytes", "weight_ratio", "test_top1")}
                      for r in table]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        models = []
        for item in args.run:
            name, sep, run = item.partition("=")
            if not sep:
                raise AmcError(f"--run expects NAME=RUN_DIR, got {item!r}")
            models.append(_model(name, Path(run)))
        atomic_write_json(args.out, {"paper": {"LeNet-300-100": 40, "LeNet-5": 39}, "models": models})
    except AmcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for m in models:
        print(f"{m['model']}: {m['ratio']:.1f}x weights ({m['file_ratio']:.1f}x file), test top-1 "
              f"{m['base_top1']:.2f} -> {m['final_top1']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
