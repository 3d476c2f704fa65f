"""``amc apply``: build the compressed model a policy describes, report its costs and accuracy, save it.

Examples::

    amc apply --policy runs/quickstart/best_policy.json --out runs/quickstart/applied
    amc apply --policy best_policy.json --checkpoint runs/r20/final.pt --dataset cifar10 \\
        --data-dir data/cifar10 --out runs/r20-applied
    amc apply --policy r20/best_policy.json --checkpoint runs/r56/final.pt --dataset cifar10 \\
        --data-dir data/cifar10 --out runs/r56-from-r20          # transferred (names differ)

The model is built by ``amc.compress.apply_policy``, the code path the search's reward used, with
the search's channel choice, reconstruction images and activation calibration, so the val top-1
is the one the search recorded. The policy records the checkpoint (and its sha256), the dataset
and val holdout and how it was scored, so ``--policy`` and ``--out`` are enough while the
checkpoint is where the policy says; options given here win.

Writes ``OUT/model.amc`` (load it with ``amc.load``), ``OUT/policy.json`` (the policy applied: after a
transfer, the mapped one) and ``OUT/apply_summary.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from amc.errors import AmcError
from amc.rundir import refuse_existing_files


def count_or_fraction(s: str) -> int | float:
    """``--val-size``: an image count (``5000``) or a fraction of the train split (``0.1``)."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {s!r}") from None
    return int(v) if v.is_integer() and v >= 1 else v


def add_common(p: argparse.ArgumentParser, *, policy_required: bool = True, device: bool = True) -> None:
    """Options shared by apply, export and finetune: the policy, the checkpoint and the data (``device``:
    and --device, --threads)."""
    g = p.add_argument_group("policy, model and data")
    g.add_argument("--policy", required=policy_required, metavar="JSON",
                   help="the policy (a search's RUN_DIR/best_policy.json)")
    g.add_argument("--model", help="expected model name (optional: the checkpoint knows its model)")
    g.add_argument("--checkpoint", metavar="PT", help="the trained uncompressed model (default: the policy's, "
                   "if it is still there unchanged)")
    g.add_argument("--dataset", help="digits, fashion-mnist, cifar10, imagefolder (default: the policy's)")
    g.add_argument("--data-dir", help="where the dataset's files are (default: the policy's)")
    g.add_argument("--val-size", type=count_or_fraction, help="val holdout (default: the policy's)")
    g.add_argument("--data-seed", type=int, help="seed of the val holdout (default: the policy's, else 0)")
    g.add_argument("--transfer", action="store_true",
                   help="map the policy onto the checkpoint's model (by name, or by depth for a deeper sibling); "
                        "automatic when the policy does not match the model")
    g.add_argument("--budget", metavar="METRIC=RATIO",
                   help="budget re-enforced after a transfer (default: the policy's), e.g. macs=0.5")
    if device:
        g = p.add_argument_group("run")
        g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default auto)")
        g.add_argument("--threads", type=int, help="torch CPU threads")


def add_parser(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (model.amc, policy.json, "
                   "apply_summary.json)")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier amc apply wrote to --out")


#: what ``amc apply`` writes into ``--out``
APPLY_OUTPUTS = ("model.amc", "policy.json", "apply_summary.json")


def setup_from_args(args: argparse.Namespace, *, need_data: bool = True) -> Any:
    """:func:`amc.finetune.prepare` from the common options."""
    import torch

    from amc.finetune import prepare

    if args.threads:
        torch.set_num_threads(args.threads)
    return prepare(args.policy, checkpoint=args.checkpoint, model=args.model, dataset=args.dataset,
                   data_dir=args.data_dir, val_size=args.val_size, data_seed=args.data_seed,
                   transfer=True if args.transfer else None, budget=args.budget, device=args.device,
                   need_data=need_data)


def fmt_acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}%"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def cost_table(costs: dict[str, Any]) -> list[str]:
    """Lines: MACs / params / weight storage, uncompressed vs compressed, direct count and cost model."""
    d, cm = costs["direct"], costs["cost_model"]
    rows = [("MACs", d["base_macs"], d["macs"], d["macs_ratio"], cm["macs_ratio"], ""),
            ("params", d["base_params"], d["params"], d["params_ratio"], cm["params_ratio"], ""),
            ("weight size", d["base_weight_bits"] / 8, d["weight_bits"] / 8, d["size_ratio"], cm["size_ratio"], "B")]
    lines = [f"{'':<12} {'uncompressed':>14} {'compressed':>14} {'ratio':>8} {'cost model':>11}"]
    for name, base, now, ratio, model_ratio, unit in rows:
        b, c = (human_bytes(base), human_bytes(now)) if unit else (f"{int(base):,}", f"{int(now):,}")
        lines.append(f"{name:<12} {b:>14} {c:>14} {ratio:>8.4f} {model_ratio:>11.4f}")
    return lines


def _verdict(acc: dict[str, Any], setup: Any) -> str:
    """Whether the re-measured val top-1 is the search's, and if not, the cause the records show."""
    if acc["matches_search"]:
        return "reproduced exactly"
    now = f"differs (now {acc.get('val_top1_search_subset', acc['val_top1']):.4f}%"
    precision = setup.policy.scoring.eval_precision
    if setup.differences:
        return f"{now}: not the search's {' and '.join(setup.differences)})"
    if precision != "fp32":  # the same model and images: only the half-precision rounding can differ
        return (f"{now}: {precision} autocast rounds differently on other hardware or kernels; fp32 val top-1 "
                f"{acc['val_top1']:.4f}%)")
    if setup.differences is None:  # a version-1 policy records neither checkpoint nor data
        return f"{now}: another checkpoint, dataset or val holdout than the search's?)"
    return f"{now} with the checkpoint, data and precision the policy records)"


def run(args: argparse.Namespace) -> int:
    from amc.export import export
    from amc.finetune import model_costs
    from amc.utils import atomic_write_json

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AmcError(f"--out {args.out!r} exists and is not a directory; amc apply writes a folder")
    refuse_existing_files([out / n for n in APPLY_OUTPUTS], overwrite=args.overwrite,
                          what="amc apply --out", hint="pass --overwrite to replace them, or choose another --out")
    setup = setup_from_args(args)
    policy = setup.policy
    compressed = setup.compress()
    base = {"val_top1": setup.evaluate(setup.base_model, "val"), "test_top1": setup.evaluate(setup.base_model, "test")}
    acc: dict[str, Any] = {"val_top1": setup.evaluate(compressed, "val"), "test_top1": setup.evaluate(compressed, "test")}
    recorded = None if setup.transferred else policy.accuracy.get("val_top1")
    if recorded is not None:
        measured = acc["val_top1"]
        precision = policy.scoring.eval_precision
        if setup.eval_limit or precision != "fp32":  # re-measured as the search measured it
            measured = setup.evaluate(compressed, "val", limit=setup.eval_limit, precision=precision)
            acc["val_top1_search_subset"] = measured
            acc["search_eval_precision"] = precision
        acc["search_val_top1"] = float(recorded)
        acc["matches_search"] = measured is not None and abs(measured - float(recorded)) <= 1e-6
    costs = model_costs(setup, compressed)
    out.mkdir(parents=True, exist_ok=True)
    policy.save(out / "policy.json")
    model_file = export(compressed, out / "model.amc", policy=policy, model_spec=setup.model_spec,
                        metrics={**acc, **costs["cost_model"]})
    summary = {
        "policy": str(args.policy), "checkpoint": setup.checkpoint, "checkpoint_sha256": setup.checkpoint_sha256,
        "data": setup.data, "differences_from_search": setup.differences,
        "model_spec": setup.model_spec, "transferred": setup.transferred,
        "transfer": policy.search.get("transfer") if setup.transferred else None,
        "uncompressed": base, "accuracy": acc, "costs": costs,
        "model_file": str(model_file), "model_file_bytes": model_file.stat().st_size,
    }
    atomic_write_json(out / "apply_summary.json", summary)

    name = (setup.model_spec or {}).get("name", type(setup.base_model).__name__)
    found = policy.search.get("agent")
    print(f"policy {args.policy}" + (f" ({found}, episode {policy.search.get('episode')})" if found else ""))
    if setup.transferred:
        tr = policy.search.get("transfer", {})
        print(f"transferred from {tr.get('source_model', {}).get('name')} onto {name} by {tr.get('method')}"
              + (f" ({tr.get('stages')} stages)" if tr.get("stages") else "")
              + (f"; budget {tr.get('budget')} re-enforced (ratio multiplier {tr.get('multiplier', 1.0):.3f})"
                 if tr.get("budget") else ""))
    print(f"model {name} from {setup.checkpoint}; data {setup.data.get('dataset')} (val {len(setup.splits.val)}, "
          f"test {len(setup.splits.test)})")
    for line in cost_table(costs):
        print(line)
    print(f"{'val top-1':<12} {fmt_acc(base['val_top1']):>14} {fmt_acc(acc['val_top1']):>14}")
    print(f"{'test top-1':<12} {fmt_acc(base['test_top1']):>14} {fmt_acc(acc['test_top1']):>14}")
    if "matches_search" in acc:
        subset = (f" (on the search's val images, in {acc.get('search_eval_precision', 'fp32')})"
                  if "val_top1_search_subset" in acc else "")
        print(f"the search recorded val top-1 {acc['search_val_top1']:.4f}%: {_verdict(acc, setup)}{subset}")
    print(f"saved {model_file} ({human_bytes(model_file.stat().st_size)}), {out / 'policy.json'}, "
          f"{out / 'apply_summary.json'}")
    return 0
