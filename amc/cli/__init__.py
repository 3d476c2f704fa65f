"""The ``amc`` console script: one module per subcommand, imported lazily (fast ``--help``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("amc.cli.train", "train a model on a dataset (checkpoints, TensorBoard, --resume)"),
    "eval": ("amc.cli.eval", "print the top-1 accuracy of a checkpoint or exported model"),
    "search": ("amc.cli.search", "search a per-layer compression policy (DDPG or an Optuna baseline)"),
    "baseline": ("amc.cli.baseline", "amc search with a baseline agent (tpe, cmaes, gp, random, nsga2, uniform, ...)"),
    "apply": ("amc.cli.apply", "apply a policy to a model and report costs and accuracy"),
    "finetune": ("amc.cli.finetune", "fine-tune a compressed model with knowledge distillation"),
    "export": ("amc.cli.export", "export a compressed model (amc file, TorchScript, ONNX)"),
    "compare": ("amc.cli.compare", "compare search runs: table and plots"),
    "bench": ("amc.cli.bench", "run the reproducible benchmark suite"),
    "fidelity": ("amc.cli.fidelity", "does the search's score predict accuracy after fine-tuning? (rank correlations)"),
}


def build_parser() -> argparse.ArgumentParser:
    from amc import __version__

    parser = argparse.ArgumentParser(prog="amc", description="AutoML model compression: learn per-layer "
                                     "pruning ratios and bit widths under a hard budget.")
    parser.add_argument("--version", action="version", version=f"amc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from amc.errors import AmcError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError) as e:
        # AmcError: bad input; ValueError: registries (unknown names list the valid ones); other OSErrors
        # (a read-only run dir, a full disk ...): say which file and what to do; -v shows their traceback
        user_error = isinstance(e, (AmcError, FileNotFoundError))
        if args.verbose and not user_error:
            raise
        message = os_error_message(e) if isinstance(e, OSError) and not user_error else str(e)
        print(f"error: {one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def one_line(text: str) -> str:
    """``text`` on one line (a library's message may span several: the CLI promises one ``error:`` line)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def os_error_message(e: OSError) -> str:
    """One line for an ``OSError``: the file, the reason and the remedy."""
    import errno

    name = repr(str(e.filename)) if e.filename is not None else "a file"
    reason = e.strerror or type(e).__name__
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (f"cannot write {name}: {reason}; free some disk space and run the same command again "
                "(an interrupted search or training continues with --resume)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {name}: {reason}; make its directory writable, or choose another --run-dir / "
                "--out on a writable disk")
    return f"{name}: {reason} ({type(e).__name__}); check the path and run the command again"
