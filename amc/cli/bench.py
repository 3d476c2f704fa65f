"""``amc bench``: the reproducible benchmark suite (AMC's CIFAR-10 experiment on a CPU).

Examples::

    amc bench --checkpoint reference/resnet20-cifar10-kd-resnet56.pt --dataset cifar10 --data-dir data \\
        --quick --out bench_out/r20-quick          # ~10 min on 2 CPU cores
    amc bench --checkpoint reference/resnet20-cifar10-kd-resnet56.pt --dataset cifar10 --data-dir data \\
        --full --out bench_out/r20-full            # hours: 300 evaluations, 5,000 val images, 5 epochs KD
    amc bench ... --out bench_out/r20-quick        # again: finished stages are reused, the rest is run

Uniform, DDPG and TPE search the budget (default ``macs=0.5``) with equal evaluations; every best
policy is rebuilt, tested, fine-tuned with KD from the uncompressed model and timed at batch 1 and 64.
Writes ``OUT/results.json`` and ``OUT/report.md`` (see :mod:`benchmarks.suite`) and prints the main table.
Options after the preset override it. Every option of :class:`amc.config.bench.BenchOptions` is an option
here (the everyday ones by a short name, the rest by their dotted path or one-level name); ``--config``
reads a YAML file over the preset and ``--print-config`` prints the resolved configuration.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from amc.config import (
    add_config_arguments,
    dump_config,
    load_yaml,
    nest_flat_keys,
    preset_defaults,
    resolve_config,
)
from amc.config.bench import PRESETS, BenchOptions

SECTIONS = {"data": "model and data", "env": "what to search (env)", "finetune": "fine-tuning"}


def _command_line() -> str | None:
    """This process's command line, as typed (``amc bench ...`` or ``python scripts/benchmark.py ...``)."""
    argv0 = Path(sys.argv[0]).name if sys.argv else ""
    if argv0 == "benchmark.py":
        return shlex.join(["python", *sys.argv])
    prog = {"amc": "amc", "__main__.py": "python -m amc.cli"}.get(argv0)
    return f"{prog} {shlex.join(sys.argv[1:])}" if prog and sys.argv[1:2] == ["bench"] else None


def add_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (f"{p.description or ''}\n\nThe defaults shown are the --quick preset's; --full or --config "
                     "replace them, and options override those.").lstrip()
    p.epilog = __doc__.split("Examples::", 1)[1]
    p.add_argument("--out", required=True, help="output folder (results.json, report.md, one folder per stage)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--quick", dest="preset", action="store_const", const="quick",
                       help="30 evaluations (10 warm-up), reward on 1,000 val images, 120 fine-tuning steps, "
                            "2,000 test images (default)")
    scale.add_argument("--full", dest="preset", action="store_const", const="full",
                       help="300 evaluations (100 warm-up), all val images, 5 epochs of fine-tuning, whole test split")
    quick = preset_defaults(BenchOptions, PRESETS["quick"])
    groups = add_config_arguments(p, BenchOptions, sections=SECTIONS, defaults=quick,
                                  config="options from a YAML file, flat or nested keys (over the preset)")
    groups["latency"].add_argument("--no-latency", action="store_true", help="skip the latency stage (a "
                                   "session on a busy machine; a later run measures it)")
    g = groups["run"]
    g.add_argument("--int8-json", help="scripts/bench_int8.py output to include")
    g.add_argument("--transfer-json", help="scripts/bench_transfer.py output to include")
    g.add_argument("--overwrite", action="store_true", help="discard what --out holds and start again")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`benchmarks.suite.BenchConfig`: the preset, then ``--config``, then the options given."""
    from benchmarks.suite import BenchConfig

    file = nest_flat_keys(BenchOptions, load_yaml(args.config) if args.config else {})
    preset = args.preset or file.get("run", {}).get("preset") or "quick"
    # the file over the preset (a section the file gives is merged with the preset's)
    config = nest_flat_keys(BenchOptions, {**PRESETS[preset], "preset": preset, **file})
    given = {k: v for k, v in vars(args).items() if "." in k}  # the generated options: dotted paths
    if args.no_latency:
        given["latency.latency_batches"] = []
    extras = {k: v for k, v in (("int8", args.int8_json), ("transfer", args.transfer_json)) if v}
    if extras:
        given["run.extras"] = extras
    given["run.preset"] = preset
    opts = resolve_config(BenchOptions, given, config=config, what=str(args.config or "bench config"))
    return BenchConfig.from_options(opts)


def run(args: argparse.Namespace) -> int:
    from benchmarks.suite import compression_table, run_benchmark, speed_table

    cfg = config_from_args(args)
    if args.print_config:
        print(dump_config(cfg.options()), end="")
        return 0
    try:
        results = run_benchmark(cfg, out_dir=args.out, overwrite=args.overwrite, progress=True,
                                command=_command_line())
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command to continue (finished stages in {args.out} are reused)",
              file=sys.stderr)
        return 130
    print("", *compression_table(results), "", *speed_table(results), sep="\n")
    print(f"\nwall time {results['wall_time_s']:.0f} s, load average {results['environment']['loadavg_start']} -> "
          f"{results['environment']['loadavg_end']}; report: {args.out}/report.md")
    return 0
