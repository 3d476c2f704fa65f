"""``amc search``: learn a per-layer compression policy under a hard budget (DDPG or a baseline agent).

Examples::

    amc search                                   # the quickstart: digits, lenet5, 50% MACs (about a minute)
    amc search --config configs/cifar10_resnet20.yaml --checkpoint runs/r20/final.pt
    amc search --model resnet20 --dataset cifar10 --data-dir data/cifar10 --target macs=0.5 \\
        --episodes 400 --warmup 100 --run-dir runs/r20-amc
    amc search --config configs/cifar10_resnet20.yaml --resume   # continue after Ctrl-C or a kill

Every option of :class:`amc.config.search.SearchOptions` is an option here: the everyday ones by a
short name (``--episodes``), the rest by their dotted path (``--env.round-to``; the old one-level
names such as ``--round-to`` still work). Without ``--config`` the quickstart preset
(``configs/quickstart.yaml``) is the base; options on the command line override the file's keys.
``--print-config`` prints the resolved configuration as YAML that ``--config`` reads back. Ctrl-C
(or SIGTERM) finishes the current episode, saves a checkpoint and stops; ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from amc.config import add_config_arguments, dump_config, nest_flat_keys, preset_defaults, resolve_config
from amc.config.search import RunConfig, SearchOptions, quickstart
from amc.errors import AmcError

SECTIONS = {"env": "what to search (env)"}


def add_parser(p: argparse.ArgumentParser, *, agent: str | None = None) -> None:
    """The options of ``amc search`` (``agent``: another default agent, as ``amc baseline`` has)."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (f"{p.description or ''}\n\nThe defaults shown are the quickstart preset's "
                     "(configs/quickstart.yaml);\nwith --config the file's values replace them. "
                     "The older one-level names (--round-to for --env.round-to) still work.").lstrip()
    p.epilog = __doc__.split("Examples::", 1)[1].split("Every option", 1)[0].rstrip() if __doc__ else None
    shown = preset_defaults(SearchOptions, quickstart())  # the defaults without --config: the quickstart's
    if agent is not None:
        shown["agent.name"] = agent
        p.set_defaults(**{"agent.name": agent})
    groups = add_config_arguments(p, SearchOptions, sections=SECTIONS, defaults=shown, config="preset to "
                                  "start from, flat or nested keys (default: configs/quickstart.yaml)")
    g = groups["run"]
    g.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help=RunConfig.model_fields["resume"].description)
    g.add_argument("--no-progress", action="store_true", help="no live progress line")
    g = groups["agent"]
    g.add_argument("--storage", help="Optuna agents: study storage, a journal file or a database URL such as "
                   "postgresql://user@host/db (default RUN_DIR/optuna.journal); workers sharing it share the study")
    g.add_argument("--study-name", help="Optuna agents: the study's name (every worker of one search passes the same)")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`agents.search.SearchConfig` the options describe (file first, options override)."""
    from agents.search import SearchConfig

    given = {k: v for k, v in vars(args).items() if "." in k}  # the generated options: dotted paths
    run_dir = given.get("run.run_dir")
    if isinstance(args.resume, str):  # --resume RUN_DIR
        if run_dir not in (None, args.resume):
            raise AmcError(f"--resume {args.resume} and --run-dir {run_dir} name different runs; pass one of them")
        given["run.run_dir"] = run_dir = args.resume
    if args.resume:
        given["run.resume"] = True
    config: Any = args.config
    if args.resume and config is None and run_dir and (Path(run_dir) / "config.yaml").is_file():
        config = Path(run_dir) / "config.yaml"  # the search's own config; options given still override
    if config is None:
        config = nest_flat_keys(SearchOptions, quickstart())
        if "model.checkpoint" in given and "model.name" not in given:
            config.get("model", {}).pop("name", None)  # the checkpoint knows its model; the preset's must not override
    for key in ("storage", "study_name"):  # Optuna agents' options (agents.optuna_agents.OptunaConfig)
        if getattr(args, key, None) is not None:
            given["agent.agent_kwargs"] = [*given.get("agent.agent_kwargs", []), (key, getattr(args, key))]
    opts = resolve_config(SearchOptions, given, config=config, what="search config")
    return SearchConfig.from_options(opts)


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None:
        return "-"
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
    if args.print_config:
        print(dump_config(cfg.options()), end="")
        return 0
    summary = run_search(cfg, progress=not args.no_progress)
    print(f"search {'interrupted' if summary.get('interrupted') else 'finished'}: {cfg.run_dir}")
    print(summary_table(summary))
    if summary.get("interrupted"):
        print("a checkpoint was saved; run the same command with --resume to continue", file=sys.stderr)
        return 130
    return 0
