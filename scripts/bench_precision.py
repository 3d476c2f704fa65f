"""Training-step and evaluation speed by precision and memory format (``--precision``, ``--channels-last``,
``--eval-precision``).

Times one SGD step (forward, backward, update) at the training batch size and one inference forward
at the reward's batch size, for fp32 / channels-last / bf16 autocast / both, on random data (speed
does not depend on the values). bf16 pays off on CPUs with AVX-512 BF16 or AMX (``lscpu | grep
amx``); elsewhere autocast emulates it and is slower. Run it on an idle machine::

    python scripts/bench_precision.py --model resnet20 --threads 2 --out bench_out/precision.json
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from amc.models import ModelSpec, build_model
from benchmarks.harness import Experiment

VARIANTS = {  # name -> (channels_last, autocast dtype)
    "fp32": (False, None),
    "fp32 channels-last": (True, None),
    "bf16": (False, torch.bfloat16),
    "bf16 channels-last": (True, torch.bfloat16),
}


def _median_time(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_variant(model_name: str, image: int, train_batch: int, eval_batch: int, repeats: int,
                 channels_last: bool, dtype: torch.dtype | None) -> dict[str, float]:
    """Median seconds of one training step and one inference forward, in ms."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(ModelSpec(model_name, num_classes=10, in_channels=3, image_size=(image, image)))
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(train_batch, 3, image, image).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (train_batch,))
    xe = torch.randn(eval_batch, 3, image, image).contiguous(memory_format=fmt)

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.inference_mode()
    def forward() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            model(xe)

    model.train()
    t_train = _median_time(step, repeats)
    model.eval()
    t_eval = _median_time(forward, repeats)
    return {"train_step_ms": 1000 * t_train, "eval_forward_ms": 1000 * t_eval}


def measure(model_name: str, image: int, train_batch: int, eval_batch: int, repeats: int) -> dict[str, dict]:
    out = {}
    for name, (channels_last, dtype) in VARIANTS.items():
        rec = time_variant(model_name, image, train_batch, eval_batch, repeats, channels_last, dtype)
        out[name] = rec
        print(f"{name:>20}: train step {rec['train_step_ms']:7.1f} ms   eval forward {rec['eval_forward_ms']:7.1f} ms",
              flush=True)
    base = out["fp32"]
    for rec in out.values():
        rec["train_speedup"] = base["train_step_ms"] / rec["train_step_ms"]
        rec["eval_speedup"] = base["eval_forward_ms"] / rec["eval_forward_ms"]
    return out


def arguments(ap) -> None:
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--eval-batch", type=int, default=512, help="the search's eval_batch_size default")
    ap.add_argument("--repeats", type=int, default=15)


def body(args) -> dict:
    results = measure(args.model, args.image_size, args.train_batch, args.eval_batch, args.repeats)
    doc = {"model": args.model, "train_batch": args.train_batch, "eval_batch": args.eval_batch,
           "threads": args.threads, "results": results}
    print(f"{'':>20}  speed-up vs fp32: " + ", ".join(
        f"{k} train x{v['train_speedup']:.2f} / eval x{v['eval_speedup']:.2f}" for k, v in results.items() if k != "fp32"))
    return doc


EXPERIMENT = Experiment(__doc__, arguments, body, out="bench_out/precision.json", threads=2)

if __name__ == "__main__":
    sys.exit(EXPERIMENT.main())
