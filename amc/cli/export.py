"""``amc export``: write a compressed model as one file (``amc.load``), TorchScript and/or ONNX.

Examples::

    amc export --policy runs/quickstart/best_policy.json --out lenet5-small.amc
    amc export --checkpoint runs/r20/final.pt --policy best_policy.json --dataset cifar10 \\
        --data-dir data/cifar10 --out r20.amc --torchscript r20.ts --onnx r20.onnx
    amc export --model-file runs/ft/model.amc --onnx r20.onnx     # from apply's / finetune's output

The model comes from a policy applied to a checkpoint (exactly as ``amc apply`` builds it; a
dataset is needed only when the policy asks for calibration images) or from an exported file.
ONNX needs the optional extra: ``pip install "amc[export]"``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from amc.cli.apply import add_common, human_bytes, setup_from_args
from amc.errors import AmcError
from amc.rundir import refuse_existing_files


def add_parser(p: argparse.ArgumentParser) -> None:
    add_common(p, policy_required=False)
    p.add_argument("--model-file", metavar="AMC", help="an exported model (apply's or finetune's model.amc) "
                   "instead of --policy")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", metavar="FILE", help="the amc model file (amc.load)")
    g.add_argument("--torchscript", metavar="FILE", help="also a traced TorchScript module")
    g.add_argument("--onnx", metavar="FILE", help="also an ONNX graph (needs pip install \"amc[export]\")")
    g.add_argument("--opset", type=int, help="ONNX opset (default: torch's)")
    g.add_argument("--huffman", action="store_true", help="Huffman-code the quantized layers' codes and sparse "
                   "indices in --out where that is smaller (Deep Compression; slower to load)")
    g.add_argument("--overwrite", action="store_true", help="replace output files that exist already")


def run(args: argparse.Namespace) -> int:
    from amc.export import export, export_onnx, export_torchscript, load_with_metadata, onnx_available
    from amc.models import example_input
    from amc.policy import Policy

    if not (args.out or args.torchscript or args.onnx):
        raise AmcError("nothing to write: pass --out FILE (and/or --torchscript FILE, --onnx FILE)")
    if bool(args.policy) == bool(args.model_file):
        raise AmcError("pass either --policy (with --checkpoint) or --model-file")
    refuse_existing_files([args.out, args.torchscript, args.onnx], overwrite=args.overwrite, what="amc export")
    if args.onnx and not onnx_available():
        raise AmcError('ONNX export needs the optional packages onnx and onnxscript: pip install "amc[export]" '
                       "(or drop --onnx)")
    if args.model_file:
        model, meta = load_with_metadata(args.model_file)
        spec = meta.get("model_spec")
        policy = Policy.from_dict(meta["policy"]) if meta.get("policy") else None
        metrics = meta.get("metrics") or {}
        if spec is None and (args.torchscript or args.onnx):
            raise AmcError(f"{args.model_file} has no model spec: cannot make an example input for tracing")
        example = example_input(spec) if spec else None
    else:
        setup = setup_from_args(args, need_data=False)
        model, policy, spec = setup.compress(), setup.policy, setup.model_spec
        example = setup.example_input.cpu()
        metrics = {}
    written = []
    if args.out:
        path = export(model, args.out, policy=policy, model_spec=spec, metrics=metrics, huffman=args.huffman)
        written.append(("amc", path))
    if args.torchscript:
        written.append(("torchscript", export_torchscript(model, args.torchscript, example)))
    if args.onnx:
        written.append(("onnx", export_onnx(model, args.onnx, example, opset=args.opset)))
    for kind, path in written:
        size = Path(path).stat().st_size
        print(f"{kind:<12} {path}  {size:,} bytes ({human_bytes(size)})")
    return 0
