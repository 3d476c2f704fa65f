"""``docs/results.md``: the benchmark results, with every table generated from the benchmark JSON.

The prose of the document is written by hand; each table sits between two markers that name its
renderer and its JSON file (relative to ``docs/``)::

    <!-- results: deep-compression bench/deep-compression.json LeNet-5 -->
    ... generated, replaced on every run ...
    <!-- /results -->

``python -m benchmarks.results`` rewrites the tables of ``docs/results.md`` and of the README's
summary in place from the JSON files; ``--check``
only reports (exit 1) whether the document is out of date, which the test suite runs. A benchmark
that writes new JSON is followed by this command, so that no number in the document is typed by
hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from amc.errors import AmcError
from amc.utils import atomic_write_json, atomic_write_text
from benchmarks.fidelity import rank_cells
from benchmarks.harness import fmt, md_table, pm, stats
from benchmarks.suite import collect_finetunes, compression_table, speed_table

__all__ = ["RENDERERS", "render", "update", "main"]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS_MD = DOCS / "results.md"
#: the documents whose marked tables are generated (JSON paths relative to each document's folder)
DOCUMENTS = (RESULTS_MD, ROOT / "README.md")

_BLOCK = re.compile(r"(<!-- results: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)

Renderer = Callable[[Any, Sequence[str]], list[str]]


def _kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def _pm(runs: Sequence[Mapping[str, Any]], key: str) -> str:
    """``mean ± std`` of ``key`` over ``runs`` (the mean alone for one run)."""
    return pm(stats(r.get(key) for r in runs))


def _deep_compression(doc: Mapping[str, Any], args: Sequence[str]) -> list[str]:
    """The stage table of one model of ``scripts/deep_compression_report.py``'s JSON."""
    (name,) = args
    model = next((m for m in doc["models"] if m["model"] == name), None)
    if model is None:
        raise AmcError(f"deep-compression: no model {name!r} (have {[m['model'] for m in doc['models']]})")
    label = {"original": "original (float32)", "pruned": "pruned + retrained",
             "quantized": "+ k-means + centroid fine-tuning", "huffman": "+ Huffman"}
    rows = [[label[r["stage"]], _kib(r["file_bytes"]), f"{r['ratio']:.1f}x", _kib(r["weight_bytes"]),
             f"{r['weight_ratio']:.1f}x", f"{r['test_top1']:.2f} %"] for r in model["table"]]
    return md_table(["stage", "file", "x file", "weights", "x float32 w", "test top-1"], rows)


def _slimming(doc: Mapping[str, Any], args: Sequence[str]) -> list[str]:
    """``scripts/bench_slimming.py``'s arms."""
    rows = [["no penalty" if not arm["lambda"] else f"slimming, lambda {arm['lambda']:g}",
             f"{arm['test_top1']:.2f} %", f"{arm['scale_mean']:.2f}", f"{arm['macs_ratio']:.3f}",
             f"{arm['finetuned_test_top1']:.2f} %"] for arm in doc["arms"].values()]
    return md_table(["arm", "test top-1", "mean \\|gamma\\|", "MACs after pruning",
                     "pruned, fine-tuned test top-1"], rows)


def _fidelity(doc: Mapping[str, Any], args: Sequence[str]) -> list[str]:
    """``amc fidelity``'s rank correlations, one row per proxy at its default settings (fp32)."""
    a = doc["analysis"]
    # the precision (@) and calibration (#) variants have tables of their own
    rows = [[f"`{name}`", *rank_cells(p), "{:.1f}-{:.1f}".format(*p["score_range"]),
             f"{p['build_s']:.2f} + {p['eval_s']:.2f}"]
            for name, p in a["proxies"].items() if "@" not in name and "#" not in name]
    if a.get("params_ratio"):
        rows.append(["params ratio alone (no model)", *rank_cells(a["params_ratio"]), "-", "0"])
    return md_table(["proxy", "Spearman", "Kendall", "Pearson", "top-3 overlap", "Spearman within 10 % of the"
                     " budget", "score range (%)", "s / policy: build + eval"], rows)


def _bench(doc: Mapping[str, Any], args: Sequence[str]) -> list[str]:
    """``amc bench``'s results.json: ``compression`` (section a) or ``speed`` (section b)."""
    (part,) = args
    if part not in ("compression", "speed"):
        raise AmcError(f"bench: part {part!r} must be compression or speed")
    return compression_table(doc) if part == "compression" else speed_table(doc)


def _finetunes(doc: Mapping[str, Any], args: Sequence[str]) -> list[str]:
    """Per method, the fine-tuned test top-1 of each seed and their mean ± std
    (:func:`benchmarks.suite.collect_finetunes`'s JSON)."""
    seeds = sorted({r["seed"] for m in doc["methods"] for r in m["runs"]})
    rows = []
    for m in doc["methods"]:
        by_seed = {r["seed"]: r["test_top1"] for r in m["runs"]}
        rows.append([m["agent"], f"{m['macs_ratio']:.3f}", f"{m['params_ratio']:.3f}", f"{m['search_val_top1']:.2f}",
                     *(fmt(by_seed.get(s)) for s in seeds), _pm(m["runs"], "test_top1")])
    return md_table(["method", "MACs", "params", "search score (val)", *(f"test, seed {s}" for s in seeds),
                    "mean ± std"], rows)


def _quant(doc: Any, args: Sequence[str]) -> list[str]:
    """``scripts/bench_quant.py``, one JSON per seed (several files merge): part ``a`` (mixed
    precision vs uniform bits at one size budget, before and after the short fine-tune) or ``b``
    (the searches at one BitOps budget); mean ± std over the seeds."""
    (part,) = args
    if part not in ("a", "b"):
        raise AmcError(f"quant: part {part!r} must be a or b")
    runs: dict[str, list[dict[str, Any]]] = {}
    for d in doc if isinstance(doc, list) else [doc]:
        for name, r in d["runs"].items():
            if name.startswith(f"{part}-"):
                runs.setdefault(name[2:], []).append({**r, **{f"ft_{k}": v for k, v in (r["finetune"] or {}).items()}})
    tuned = any(r["finetune"] for rs in runs.values() for r in rs)  # part a always; part b with --ft-b
    rows = []
    for name, rs in runs.items():
        ratios = [f"{stats(r['achieved'][k] for r in rs)['mean']:.3f}"
                  for k in ("bitops_ratio", "macs_ratio", "size_ratio")]
        cells = [_pm(rs, "best_val")] + ([_pm(rs, "ft_test_before"), _pm(rs, "ft_test_after")] if tuned else [])
        rows.append([name, str(len(rs)), str(rs[0]["evaluations"]), *ratios, *cells])
    head = ["method", "seeds", "evaluations", "BitOps", "MACs", "size", "best val top-1"]
    return md_table(head + (["test top-1", "test top-1 after the fine-tune"] if tuned else []), rows)


#: the table renderers, by the name a marker gives
RENDERERS: dict[str, Renderer] = {"deep-compression": _deep_compression, "slimming": _slimming,
                                  "fidelity": _fidelity, "bench": _bench, "finetunes": _finetunes,
                                  "quant": _quant}


def _load(spec: str, docs: Path) -> tuple[Renderer, Any, list[str]]:
    name, *rest = spec.split()
    if name not in RENDERERS:
        raise AmcError(f"unknown table renderer {name!r} (known: {', '.join(RENDERERS)})")
    if not rest:
        raise AmcError(f"the {name!r} table names no JSON file")
    files = rest[0].split(",")
    docs_loaded = []
    for f in files:
        path = docs / f
        if not path.is_file():
            raise AmcError(f"{path} not found (the {name!r} table reads it)")
        docs_loaded.append(json.loads(path.read_text()))
    return RENDERERS[name], docs_loaded if len(files) > 1 else docs_loaded[0], rest[1:]


def render(text: str, docs: Path = DOCS) -> str:
    """``text`` with every marked table regenerated from its JSON."""
    def block(m: re.Match[str]) -> str:
        fn, doc, args = _load(m["spec"], docs)
        return m.group(1) + "\n".join(fn(doc, args)) + "\n" + m.group(4)
    return _BLOCK.sub(block, text)


def update(path: Path = RESULTS_MD, *, check: bool = False) -> bool:
    """Regenerate ``path``'s tables; returns whether anything changed (with ``check``, nothing is written)."""
    old = path.read_text()
    new = render(old, path.parent)
    if new != old and not check:
        atomic_write_text(path, new)
    return new != old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", type=Path, action="append",
                    help="a document to update (repeatable; default docs/results.md and README.md)")
    ap.add_argument("--check", action="store_true", help="only report whether the tables are out of date (exit 1)")
    ap.add_argument("--finetunes", nargs=2, metavar=("BENCH_DIR", "JSON"),
                    help="first collect an amc bench folder's finished fine-tunes into JSON (under docs/bench/)")
    args = ap.parse_args(argv)
    try:
        if args.finetunes:
            atomic_write_json(args.finetunes[1], collect_finetunes(args.finetunes[0]))
        changed = {path: update(path, check=args.check) for path in args.path or DOCUMENTS}
    except AmcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, c in changed.items():
        if args.check and c:
            print(f"{path} is out of date: run python -m benchmarks.results", file=sys.stderr)
        else:
            print(f"{path}: {'updated' if c else 'up to date'}")
    return 1 if args.check and any(changed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
