"""``amc fidelity``: does the search's score predict the accuracy users get after fine-tuning?

Examples::

    amc fidelity --checkpoint reference/resnet20-cifar10-kd-resnet56.pt --dataset cifar10 --data-dir data \\
        --val-size 5000 --target macs=0.5 --policies 16 --epochs 1 --threads 2 \\
        --ft-precision bf16 --ft-channels-last --out runs/fidelity-r20
    amc fidelity ... --runs runs/search-ddpg runs/search-tpe      # their best policies join the sample
    amc fidelity ... --resume                                      # continue after Ctrl-C or a kill

Samples policies at the budget (uniform + random episodes + the best of --runs), scores each with
every proxy (vanilla, bn, reconstruct, reconstruct+bn, ft:K), fine-tunes each for --epochs with KD,
and reports Spearman / Kendall / Pearson of each proxy's score against the fine-tuned val top-1.
Writes fidelity.json, fidelity.md and scatter-PROXY.png into --out. Every option of
:class:`amc.config.fidelity.FidelityOptions` is an option here (the everyday ones by a short name,
the rest by their dotted path or one-level name); ``--config`` reads a YAML file (flat or nested
keys) and ``--print-config`` prints the resolved configuration, which ``--config`` reads back.
"""

from __future__ import annotations

import argparse
from typing import Any

from amc.config import add_config_arguments, dump_config, resolve_config
from amc.config.fidelity import FidelityOptions

SECTIONS = {"data": "model and data", "env": "budget", "sample": "policies", "score": "scores",
            "finetune": "fine-tuning (one schedule for all)"}


def add_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("Examples::", 1)[1].split("Samples", 1)[0].rstrip() if __doc__ else None
    g = add_config_arguments(p, FidelityOptions, sections=SECTIONS, defaults={"data.checkpoint": "required"},
                             config="options from a YAML file, flat or nested keys")["run"]
    g.add_argument("--out", help="output folder (required)")
    g.add_argument("--resume", action="store_true", help="continue the study in --out")
    g.add_argument("--overwrite", action="store_true", help="discard what --out holds")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`benchmarks.fidelity.FidelityConfig`: its defaults, then ``--config``, then the options given."""
    from benchmarks.fidelity import FidelityConfig

    opts = resolve_config(FidelityOptions, args, config=args.config, what=args.config or "fidelity config")
    return FidelityConfig.from_options(opts)


def run(args: argparse.Namespace) -> int:
    from amc.errors import AmcError
    from benchmarks.fidelity import run_fidelity
    from benchmarks.harness import fmt

    cfg = config_from_args(args)
    if args.print_config:
        print(dump_config(cfg.options()), end="")
        return 0
    if not args.out:
        raise AmcError("--out is required: the study's folder")
    if args.resume and args.overwrite:
        raise AmcError("--resume continues --out, --overwrite discards it: pass one")
    doc = run_fidelity(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=True)
    print(f"fidelity study: {args.out}/fidelity.md")
    for key, p in doc["analysis"]["proxies"].items():
        print(f"  {key:<20} Spearman {fmt(p['all']['spearman']):>5}  Kendall {fmt(p['all']['kendall']):>5}  "
              f"{p['seconds_per_policy']:.2f} s/policy")
    return 0
