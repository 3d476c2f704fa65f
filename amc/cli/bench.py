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
Options after the preset override it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from amc.cli._args import PRECISION_CHOICES


def _none_or_int(text: str) -> int | None:
    if text.lower() in ("all", "none"):
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count or 'all'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1 (or 'all')")
    return v


def _command_line() -> str | None:
    """This process's command line, as typed (``amc bench ...`` or ``python scripts/benchmark.py ...``)."""
    argv0 = Path(sys.argv[0]).name if sys.argv else ""
    rest = " ".join(shlex.quote(a) for a in sys.argv[1:])
    if argv0 == "amc" and sys.argv[1:2] == ["bench"]:
        return f"amc {rest}"
    if argv0 == "benchmark.py":
        return f"python {shlex.quote(sys.argv[0])} {rest}"
    if argv0 == "__main__.py" and sys.argv[1:2] == ["bench"]:
        return f"python -m amc.cli {rest}"
    return None


def add_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("Examples::", 1)[1]
    p.add_argument("--checkpoint", required=True, help="the trained, uncompressed model (amc train's final.pt)")
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's)")
    p.add_argument("--data-dir", help="where the dataset is (default: the checkpoint's)")
    p.add_argument("--out", required=True, help="output folder (results.json, report.md, one folder per stage)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--quick", dest="preset", action="store_const", const="quick",
                       help="30 evaluations (10 warm-up), reward on 1,000 val images, 120 fine-tuning steps, "
                            "2,000 test images (default)")
    scale.add_argument("--full", dest="preset", action="store_const", const="full",
                       help="300 evaluations (100 warm-up), all val images, 5 epochs of fine-tuning, whole test split")
    g = p.add_argument_group("overrides")
    g.add_argument("--agents", nargs="+", help="agents to compare (default: uniform ddpg tpe)")
    g.add_argument("--target", help="budget METRIC=RATIO (default macs=0.5)")
    g.add_argument("--episodes", type=int, help="evaluations per searching agent")
    g.add_argument("--warmup", type=int, help="random warm-up evaluations (DDPG warm-up, Optuna start-up trials)")
    g.add_argument("--val-size", type=int, help="val holdout size (default: the checkpoint's holdout)")
    g.add_argument("--reward-val", type=_none_or_int, default=argparse.SUPPRESS,
                   help="val images of the reward (a count or 'all')")
    g.add_argument("--test-size", type=_none_or_int, default=argparse.SUPPRESS,
                   help="test images evaluated (a count or 'all')")
    g.add_argument("--ft-epochs", type=int, help="fine-tuning epochs (0: no fine-tuning)")
    g.add_argument("--ft-steps", type=_none_or_int, default=argparse.SUPPRESS,
                   help="fine-tuning steps per epoch (a count or 'all')")
    g.add_argument("--ft-lr", type=float, help="fine-tuning peak learning rate (default 0.01)")
    g.add_argument("--ft-precision", choices=PRECISION_CHOICES,
                   help="fine-tuning precision (default fp32; bf16 + channels-last is ~2x faster on AVX-512 BF16/AMX CPUs)")
    g.add_argument("--ft-channels-last", action="store_true", help="fine-tune in the NHWC memory format")
    g.add_argument("--no-kd", action="store_true", help="fine-tune on labels only")
    g.add_argument("--reconstruct", action="store_true", help="older switch for --proxy reconstruct")
    g.add_argument("--proxy", help="evaluation proxy of the searches (default auto: bn for models with BatchNorm)")
    g.add_argument("--calibration-size", type=int, help="train images of the proxy (default 256)")
    g.add_argument("--budget-band", type=float, help="two-sided budget band of the searches (default 0.02; 0: AMC's one-sided clip)")
    g.add_argument("--ft-seeds", type=int, nargs="+", help="fine-tune each best policy once per seed (default 0)")
    g.add_argument("--eval-precision", choices=PRECISION_CHOICES,
                   help="precision of the searches' reward evaluation (default fp32; val/test top-1 stay fp32)")
    g.add_argument("--round-to", type=int, help="channel multiple (default 1)")
    g.add_argument("--seed", type=int, help="search and fine-tuning seed (default 0)")
    g.add_argument("--threads", type=int, help="torch CPU threads of searches and fine-tuning (default 1)")
    g.add_argument("--latency-threads", type=int, help="threads of the latency measurements (default 1)")
    g.add_argument("--latency-batches", type=int, nargs="+", help="batch sizes timed (default 1 64)")
    g.add_argument("--no-latency", action="store_true",
                   help="skip the latency stage (a session on a busy machine; a later run measures it)")
    g.add_argument("--latency-time", type=float, help="seconds of timed runs per model, batch and round "
                   "(quick 1, full 5)")
    g.add_argument("--latency-rounds", type=int, help="interleaved latency rounds (default 3)")
    g.add_argument("--device", help="device of searches and fine-tuning (default cpu)")
    g.add_argument("--int8-json", help="scripts/bench_int8.py output to include")
    g.add_argument("--transfer-json", help="scripts/bench_transfer.py output to include")
    p.add_argument("--overwrite", action="store_true", help="discard what --out holds and start again")


def run(args: argparse.Namespace) -> int:
    from benchmarks.suite import BenchConfig, compression_table, run_benchmark, speed_table

    extras = {k: v for k, v in (("int8", args.int8_json), ("transfer", args.transfer_json)) if v}
    overrides = {
        "checkpoint": args.checkpoint, "dataset": args.dataset, "data_dir": args.data_dir, "target": args.target,
        "episodes": args.episodes, "warmup": args.warmup, "val_size": args.val_size, "ft_epochs": args.ft_epochs,
        "ft_lr": args.ft_lr, "eval_precision": args.eval_precision, "round_to": args.round_to, "seed": args.seed, "threads": args.threads,
        "latency_threads": args.latency_threads, "latency_min_time_s": args.latency_time,
        "latency_rounds": args.latency_rounds, "device": args.device, "extras": extras or None,
        "agents": tuple(args.agents) if args.agents else None,
        "latency_batches": () if args.no_latency else tuple(args.latency_batches) if args.latency_batches else None,
        "kd": False if args.no_kd else None, "ft_precision": args.ft_precision,
        "ft_channels_last": True if args.ft_channels_last else None, "reconstruct": True if args.reconstruct else None,
        "proxy": args.proxy, "calibration_size": args.calibration_size, "budget_band": args.budget_band,
        "ft_seeds": tuple(args.ft_seeds) if args.ft_seeds else None,
    }
    values = {k: v for k, v in overrides.items() if v is not None}
    for opt, key in (("reward_val", "reward_val"), ("test_size", "test_size"), ("ft_steps", "ft_steps_per_epoch")):
        if hasattr(args, opt):  # given: a count, or None for 'all' (which must override the preset's count)
            values[key] = getattr(args, opt)
    cfg = BenchConfig.from_preset(args.preset or "quick", **values)
    try:
        results = run_benchmark(cfg, out_dir=args.out, overwrite=args.overwrite, progress=True,
                                command=_command_line())
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command to continue (finished stages in {args.out} are reused)",
              file=sys.stderr)
        return 130
    print()
    for line in compression_table(results):
        print(line)
    print()
    for line in speed_table(results):
        print(line)
    print(f"\nwall time {results['wall_time_s']:.0f} s, load average {results['environment']['loadavg_start']} -> "
          f"{results['environment']['loadavg_end']}; report: {args.out}/report.md")
    return 0
