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
Writes fidelity.json, fidelity.md and scatter-PROXY.png into --out.
"""

from __future__ import annotations

import argparse

from amc.cli._args import PRECISION_CHOICES, count_or_fraction


def _ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated counts, e.g. 500,1000,5000; got {s!r}") from None


def _names(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def add_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split("Examples::", 1)[1].split("Samples", 1)[0].rstrip() if __doc__ else None
    g = p.add_argument_group("model, data, budget")
    g.add_argument("--checkpoint", required=True, help="the trained, uncompressed model (amc train checkpoint)")
    g.add_argument("--dataset", default="digits", help="digits, fashion-mnist, cifar10, imagefolder (default digits)")
    g.add_argument("--data-dir", help="where the dataset's files are")
    g.add_argument("--val-size", type=count_or_fraction, help="held-out train images the scores use (as amc search)")
    g.add_argument("--target", default="macs=0.5", help="budget of the sampled policies (default macs=0.5)")
    g.add_argument("--lbound", type=float, default=0.2, help="smallest keep ratio per group (default 0.2)")
    g.add_argument("--round-to", type=int, default=1, help="channel multiple (default 1)")
    g = p.add_argument_group("policies and scores")
    g.add_argument("--policies", type=int, default=16, help="policies to sample: uniform + random episodes (default 16)")
    g.add_argument("--runs", nargs="+", default=[], metavar="RUN_DIR", help="search runs whose best policy joins")
    g.add_argument("--budget-band", type=float, default=0.0, help="budget band of the random episodes (default 0)")
    g.add_argument("--proxies", type=_names, default=None,
                   help="comma-separated proxies (default vanilla,bn,reconstruct,reconstruct+bn,ft:20)")
    g.add_argument("--calibration-size", type=int, default=256, help="train images of the proxies (default 256)")
    g.add_argument("--calibration-sizes", type=_ints, default=[], help="also score bn with these, e.g. 64,128,512")
    g.add_argument("--val-sizes", type=_ints, default=[], help="report fidelity at these val prefixes, e.g. 500,1000")
    g.add_argument("--eval-precisions", type=_names, default=[], help="also score in these precisions, e.g. bf16")
    g = p.add_argument_group("fine-tuning (one schedule for all)")
    g.add_argument("--epochs", type=int, default=1, help="epochs per policy (default 1)")
    g.add_argument("--lr", type=float, default=0.01, help="peak learning rate, cosine decay (default 0.01)")
    g.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    g.add_argument("--ft-precision", choices=PRECISION_CHOICES, default="fp32", help="training precision")
    g.add_argument("--ft-channels-last", action="store_true", help="train in NHWC (faster with bf16 on CPUs)")
    g.add_argument("--no-test", action="store_true", help="skip the test split after fine-tuning")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="seeds the sampled episodes and the fine-tuning (default 0)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps, auto (default cpu)")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--resume", action="store_true", help="continue the study in --out")
    g.add_argument("--overwrite", action="store_true", help="discard what --out holds")


def run(args: argparse.Namespace) -> int:
    from amc.errors import AmcError
    from benchmarks.fidelity import DEFAULT_PROXIES, FidelityConfig, run_fidelity

    if args.resume and args.overwrite:
        raise AmcError("--resume continues --out, --overwrite discards it: pass one")
    cfg = FidelityConfig(
        checkpoint=args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, val_size=args.val_size,
        target=args.target, lbound=args.lbound, round_to=args.round_to, policies=args.policies, runs=list(args.runs),
        budget_band=args.budget_band, proxies=args.proxies or list(DEFAULT_PROXIES),
        calibration_size=args.calibration_size, calibration_sizes=args.calibration_sizes, val_sizes=args.val_sizes,
        eval_precisions=args.eval_precisions, epochs=args.epochs, ft_lr=args.lr, ft_batch_size=args.batch_size,
        ft_precision=args.ft_precision, ft_channels_last=args.ft_channels_last, ft_test=not args.no_test,
        seed=args.seed, device=args.device, threads=args.threads)
    doc = run_fidelity(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=True)
    print(f"fidelity study: {args.out}/fidelity.md")
    print("\n".join(line for line in (doc and _table(doc)) or []))
    return 0


def _table(doc: dict) -> list[str]:
    rows = []
    for key, p in doc["analysis"]["proxies"].items():
        a = p["all"]
        sp = "-" if a["spearman"] is None else f"{a['spearman']:.2f}"
        kt = "-" if a["kendall"] is None else f"{a['kendall']:.2f}"
        rows.append(f"  {key:<20} Spearman {sp:>5}  Kendall {kt:>5}  {p['seconds_per_policy']:.2f} s/policy")
    return rows
