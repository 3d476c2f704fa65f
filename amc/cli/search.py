"""``amc search``: learn a per-layer compression policy under a hard budget (DDPG or a baseline agent).

Examples::

    amc search                                   # the quickstart: digits, lenet5, 50% MACs (about a minute)
    amc search --config configs/cifar10_resnet20.yaml --checkpoint runs/r20/final.pt
    amc search --model resnet20 --dataset cifar10 --data-dir data/cifar10 --target macs=0.5 \\
        --episodes 400 --warmup 100 --run-dir runs/r20-amc
    amc search --config configs/cifar10_resnet20.yaml --resume   # continue after Ctrl-C or a kill

Without ``--config`` the quickstart preset (``configs/quickstart.yaml``) is the base; options on the
command line override the file's keys (named alike: ``--run-dir`` -> ``run_dir``). Ctrl-C (or SIGTERM)
finishes the current episode, saves a checkpoint and stops; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from amc.cli._args import PRECISION_CHOICES, count_or_fraction
from amc.config import key_value
from amc.errors import AmcError


def _pair(text: str) -> list[int]:
    try:
        lo, hi = (int(t) for t in text.replace(":", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give MIN,MAX bit widths, e.g. 2,8") from None
    return [lo, hi]


def add_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("Examples::", 1)[1].split("Without", 1)[0].rstrip() if __doc__ else None
    p.add_argument("--config", metavar="YAML", help="preset to start from (default: configs/quickstart.yaml)")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="architecture (lenet5, resnet20, ...; may be omitted with --checkpoint)")
    g.add_argument("--checkpoint", help="trained `amc train` checkpoint; without it the model is trained briefly")
    g.add_argument("--dataset", help="digits, fashion-mnist, cifar10, imagefolder")
    g.add_argument("--data-dir", help="where the dataset's files are")
    g.add_argument("--val-size", type=count_or_fraction, help="held-out images for the reward (count or fraction)")
    g.add_argument("--train-epochs", type=int, help="epochs of the brief pretraining without --checkpoint")
    g.add_argument("--data-seed", type=int, help="seed of the val holdout and the brief pretraining (default 0)")
    g = p.add_argument_group("what to search")
    g.add_argument("--mode", choices=("prune", "quant", "joint"), help="channel pruning, mixed precision, or both")
    g.add_argument("--target", help="hard budget METRIC=RATIO: macs, params, size, bitops, latency (e.g. macs=0.5)")
    g.add_argument("--reward", help="reward name (acc, acc_flops, acc_size, acc_latency)")
    g.add_argument("--lbound", type=float, help="smallest preserve ratio per layer (AMC: 0.2)")
    g.add_argument("--round-to", type=int, help="round kept channels to a multiple of this (e.g. 8)")
    g.add_argument("--granularity", choices=("channel", "fine"), help="structured channels or unstructured weights")
    g.add_argument("--importance", help="channel criterion: l1, l2, fpgm, bn_scale, random")
    g.add_argument("--proxy", help="what is done to each compressed model before it is scored: auto (default: bn "
                   "with BatchNorm, else reconstruct), vanilla, bn, reconstruct, reconstruct+bn, ft:K (K KD steps)")
    g.add_argument("--calibration-size", type=int, help="train images of the proxy (norm statistics, reconstruction; "
                   "default 256, fixed seed)")
    g.add_argument("--budget-band", type=float, help="end every episode within [target x (1 - band), target], "
                   "(default 0.02; 0: AMC's one-sided clip)")
    g.add_argument("--reconstruct", action=argparse.BooleanOptionalAction, default=None,
                   help="older switch: --reconstruct is --proxy reconstruct, --no-reconstruct --proxy vanilla")
    g.add_argument("--w-bits", type=_pair, metavar="MIN,MAX", help="weight bit range (quant/joint)")
    g.add_argument("--a-bits", type=_pair, metavar="MIN,MAX", help="activation bit range (quant/joint)")
    g.add_argument("--eval-batch-size", type=int, help="batch size of the reward's evaluation")
    g.add_argument("--eval-precision", choices=PRECISION_CHOICES,
                   help="precision of the reward's evaluation (mode prune): bf16 is ~2.8x faster per episode on CPUs with "
                   "AVX-512 BF16/AMX; the shipped policy is re-measured in fp32 by amc apply (default fp32)")
    g.add_argument("--env-opt", type=key_value, action="append", metavar="KEY=VALUE",
                   help="further environment option (repeatable)")
    g = p.add_argument_group("agent")
    g.add_argument("--agent", help="search agent (ddpg, or a registered baseline)")
    g.add_argument("--episodes", type=int, help="episodes in all (a resumed run continues up to this)")
    g.add_argument("--warmup", type=int, help="random warm-up episodes (AMC: 100, HAQ: 20)")
    g.add_argument("--noise-sigma", type=float, help="initial exploration sigma in action units (AMC: 0.5)")
    g.add_argument("--noise-decay", type=float, help="sigma decay per episode after warm-up (AMC: 0.95)")
    g.add_argument("--final-reward-to-all", action=argparse.BooleanOptionalAction, default=None,
                   help="give every transition the episode's final reward (AMC; default on)")
    g.add_argument("--warm-start", metavar="RUN_DIR_OR_JSON",
                   help="ddpg: start from this policy (a run dir's best_policy.json, or a policy JSON): it and a few "
                        "noisy neighbours are the first episodes, in the replay buffer before exploration")
    g.add_argument("--agent-opt", type=key_value, action="append", metavar="KEY=VALUE",
                   help="agent option, repeatable (ddpg: actor_lr, critic_lr, tau, gamma, batch_size, hidden, ...)")
    g.add_argument("--storage", help="Optuna agents: study storage, a journal file or a database URL such as "
                   "postgresql://user@host/db (default RUN_DIR/optuna.journal); workers sharing it share the study")
    g.add_argument("--study-name", help="Optuna agents: the study's name (every worker of one search passes the same)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help="seed of everything (default 0)")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N, mps")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--run-dir", help="output directory (config, policy, TensorBoard, checkpoints, summary)")
    g.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the search in RUN_DIR (or --run-dir) with the config it saved")
    g.add_argument("--overwrite", action="store_true", default=None, help="discard what --run-dir holds")
    g.add_argument("--checkpoint-every", type=int, help="episodes between checkpoints (default 10)")
    g.add_argument("--no-progress", action="store_true", help="no live progress line")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`agents.search.SearchConfig` the options describe (file first, options override)."""
    from agents.search import SearchConfig, load_search_config

    names = set(SearchConfig.field_names())
    if isinstance(args.resume, str):  # --resume RUN_DIR
        if args.run_dir not in (None, args.resume):
            raise AmcError(f"--resume {args.resume} and --run-dir {args.run_dir} name different runs; pass one of them")
        args.run_dir, args.resume = args.resume, True
    config = args.config
    if args.resume and config is None and args.run_dir and (Path(args.run_dir) / "config.yaml").is_file():
        config = Path(args.run_dir) / "config.yaml"  # the search's own config; options given still override
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.env_opt:
        overrides["env_kwargs"] = dict(args.env_opt)
    if args.agent_opt:
        overrides["agent_kwargs"] = dict(args.agent_opt)
    for key in ("storage", "study_name"):  # Optuna agents' options (agents.optuna_agents.OptunaConfig)
        if getattr(args, key, None) is not None:
            overrides.setdefault("agent_kwargs", {})[key] = getattr(args, key)
    try:
        return load_search_config(config, overrides)
    except AmcError:
        raise
    except (TypeError, ValueError) as e:  # e.g. a YAML value of the wrong type
        raise AmcError(f"search config: {e}") from None


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return format(v, spec) if isinstance(v, float) else str(v)


def summary_table(s: dict[str, Any]) -> str:
    achieved = ", ".join(f"{k.removesuffix('_ratio')} {_fmt(v, '.3f')}" for k, v in (s.get("achieved") or {}).items())
    rows = [
        ("agent", s.get("agent")),
        ("episodes", f"{s.get('episodes')} of {s.get('episodes_planned')}"),
        ("target", s.get("target")),
        ("base val top-1", f"{_fmt(s.get('base_accuracy'), '.2f')} %"),
        ("best val top-1", f"{_fmt(s.get('best_accuracy'), '.2f')} % (episode {_fmt(s.get('best_episode'))})"),
        ("best reward", _fmt(s.get("best_reward"))),
        ("achieved", achieved or "-"),
        ("wall time", f"{_fmt(s.get('wall_time_s'), '.1f')} s ({_fmt(s.get('seconds_per_episode'), '.2f')} s/episode)"),
        ("best policy", s.get("best_policy") or "-"),
        ("tensorboard", f"tensorboard --logdir {s.get('run_dir')}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from agents.search import run_search

    cfg = config_from_args(args)
    summary = run_search(cfg, progress=not args.no_progress)
    head = "search interrupted" if summary.get("interrupted") else "search finished"
    print(f"{head}: {cfg.run_dir}")
    print(summary_table(summary))
    if summary.get("interrupted"):
        print("a checkpoint was saved; run the same command with --resume to continue", file=sys.stderr)
        return 130
    return 0
