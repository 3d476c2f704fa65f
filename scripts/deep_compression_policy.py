#!/usr/bin/env python
"""Write a fine-granularity policy (per-layer density and weight bits) for ``amc finetune --deep-compression``.

    python scripts/deep_compression_policy.py --checkpoint runs/mlp/final.pt \
        --density fc1=0.08,fc2=0.09,classifier=0.26 --bits 6 --out bench_out/dc/mlp-policy.json

``--density`` and ``--bits`` take one number for every conv/linear layer or ``LAYER=VALUE,...`` (a layer
left out keeps all its weights / stays float32). The search writes such policies too
(``amc search --mode joint --granularity fine --target size=...``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amc.deep_compression import make_policy
from amc.errors import AmcError
from amc.models import example_input, resolve_spec
from amc.training import load_checkpoint


def _per_layer(text: str, cast: type) -> dict | float | int:
    if "=" not in text:
        return cast(text)
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise AmcError(f"expected LAYER=VALUE, got {item!r}")
        out[name.strip()] = cast(value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the trained uncompressed model (amc train's final.pt)")
    p.add_argument("--density", required=True, help="kept weight fraction in (0, 1]: one number or LAYER=D,...")
    p.add_argument("--bits", required=True, help="weight bits 1..8 (k-means values 2^bits): one number or LAYER=B,...")
    p.add_argument("--out", required=True, help="the policy JSON to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    try:
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise AmcError(f"{out} exists; pass --overwrite to replace it")
        model, ckpt = load_checkpoint(args.checkpoint)
        if not ckpt.get("model_spec"):
            raise AmcError(f"{args.checkpoint} records no model spec")
        spec = resolve_spec(ckpt["model_spec"])
        policy = make_policy(model, example_input(spec), density=_per_layer(args.density, float),
                             bits=_per_layer(args.bits, int), model_spec=spec.to_dict())
        out.parent.mkdir(parents=True, exist_ok=True)
        policy.save(out)
    except (AmcError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: " + ", ".join(f"{ly.name} d={1 - (ly.sparsity or 0):.3g} b={ly.w_bits}" for ly in policy.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
