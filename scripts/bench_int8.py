#!/usr/bin/env python
"""fp32 vs real int8 CPU latency of built-in models (median ms per batch), printed and written as JSON.

    python scripts/bench_int8.py                          # resnet20 and lenet5, batch 1 and 64, 1 thread
    python scripts/bench_int8.py --models resnet20 --batch-sizes 1 64 --threads 2 --backend fx
    python scripts/bench_int8.py --keep 0.5              # also a ResNet-20 pruned to 50% channels

Only 8-bit can be timed: the latency of sub-8-bit policies comes from a model or a table.
The weights are untrained (latency does not depend on them); calibration uses random inputs.
"""

from __future__ import annotations

import sys

from amc.int8 import INT8_BACKENDS, compare_latency, int8_backends
from amc.models import build_model, example_input, resolve_spec
from amc.utils import seed_everything
from benchmarks.harness import Experiment

DEFAULT_SPECS = {"resnet20": {"name": "resnet20"},
                 "lenet5": {"name": "lenet5", "in_channels": 1, "image_size": 32}}


def _pruned(model, spec, keep: float):
    from amc.pruning import Pruner

    pruner = Pruner(model.eval(), example_input(spec))
    return pruner.prune([keep] * len(pruner.graph.groups))


def arguments(p) -> None:
    p.add_argument("--models", nargs="+", default=list(DEFAULT_SPECS), help="built-in model names")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--backend", default="auto", choices=INT8_BACKENDS)
    p.add_argument("--keep", type=float, default=None, help="also time each model channel-pruned to this ratio")
    p.add_argument("--compile-fp32", action="store_true", help="also time torch.compile'd fp32")
    p.add_argument("--seed", type=int, default=0)


def body(args) -> dict:
    print(f"int8 backends here: {int8_backends() or 'none'}")
    report = {"runs": []}
    for name in args.models:
        spec = resolve_spec(DEFAULT_SPECS.get(name, {"name": name}))
        seed_everything(args.seed)
        base = build_model(spec).eval()
        variants = [(name, base)]
        if args.keep is not None:
            variants.append((f"{name}@keep{args.keep:g}", _pruned(base, spec, args.keep)))
        for label, model in variants:
            r = compare_latency(model, (spec.in_channels, *spec.image_size), batch_sizes=args.batch_sizes,
                                threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                                backend=args.backend, fp32_compiled=args.compile_fp32, seed=args.seed)
            r["model"] = label
            report["runs"].append(r)
            for row in r["results"]:
                comp = row.get("fp32_compiled_ms")
                comp_s = f"  fp32-compiled {comp:8.3f} ms" if comp is not None else ""
                print(f"{label:24s} batch {row['batch_size']:4d}  fp32 {row['fp32_ms']:8.3f} ms  "
                      f"int8 {row['int8_ms']:8.3f} ms  x{row['speedup']:.2f}{comp_s}  [{r['backend']}, "
                      f"{r['threads']} thread(s)]")
    report["note"] = report["runs"][0]["note"] if report["runs"] else ""
    return report


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_int8.json")

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
