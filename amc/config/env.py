"""``EnvSettings``: everything the compression environment takes (``envs.EnvConfig`` is its flat view).

It is :class:`amc.config.search.EnvShared` (the options ``amc search`` shares with the env, with
their defaults and checks) plus the env-only options. Three defaults differ from ``amc search``'s on
purpose, and only these (:data:`LIBRARY_DEFAULTS`): the library is used directly, without a run.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from amc.config.search import EnvShared, PathStr

__all__ = ["EnvSettings", "LIBRARY_DEFAULTS", "MODE_METRICS"]

#: the budget metrics each (mode, granularity) can meet
MODE_METRICS = {
    ("prune", "channel"): ("macs", "params", "size", "bitops", "latency"),
    ("prune", "fine"): ("params", "size"),
    ("quant", "channel"): ("size", "bitops"),
    ("joint", "channel"): ("bitops", "size", "macs", "params"),
    ("joint", "fine"): ("size", "params"),  # Deep Compression: per-layer density and weight bits
}

#: the env's defaults that differ from ``amc search``'s (``amc search`` passes its own values to the env)
LIBRARY_DEFAULTS = {
    "budget_band": 0.0,  # AMC's one-sided clip; amc search ends episodes within 2 % under the target
    "eval_batch_size": 1000,  # amc search: 512
    "device": "cpu",  # amc search: auto (its --device, a run option)
}


class EnvSettings(EnvShared):
    """The environment's options: ``amc search``'s env options, the env-only ones, and the library defaults."""

    # -- amc search's options, at the library's defaults (LIBRARY_DEFAULTS)
    budget_band: float = Field(LIBRARY_DEFAULTS["budget_band"], ge=0, lt=1,
                               description="end every episode within [target x (1 - band), target] (0: AMC's "
                                           "one-sided clip; 0.02 ends every episode within 2% under the target)")
    eval_batch_size: int = Field(LIBRARY_DEFAULTS["eval_batch_size"], ge=1,
                                 description="batch size of the reward's evaluation")
    # unchecked (resolved when the env is built): a saved config stays readable where the device is absent
    device: str = Field(LIBRARY_DEFAULTS["device"], description="cpu, cuda, cuda:N, mps, auto (resolved when the env "
                                                               "is built)")
    # -- env-only options
    calibration_seed: int = Field(0, description="seed of the proxy's calibration images (not the search's seed, so "
                                                 "that two searches score a policy alike)")
    first_last_8bit: bool = Field(True, description="quant/joint: the first and last layers stay at 8 bits")
    eval_limit: int | None = Field(None, ge=1, description="val images the reward is measured on (none: the whole "
                                                           "val split)")
    seed: int = Field(0, description="seed of the search the env serves (kept with its config)")
    latency_table: PathStr | None = Field(None, description="a saved per-layer latency table (latency= budget, "
                                                            "acc_latency reward); none: measured when the env is built")
    latency_batch: int = Field(1, ge=1, description="batch size of the latency measurement")
    latency_threads: int | None = Field(None, ge=1, description="torch threads of the latency measurement")

    @model_validator(mode="after")
    def _consistent(self) -> EnvSettings:
        from amc.policy import parse_target
        from amc.proxies import parse_proxy

        if self.granularity == "fine" and self.mode not in ("prune", "joint"):
            raise ValueError("granularity 'fine' (unstructured sparsity) works with --mode prune (density per layer) "
                             "or --mode joint (density and weight bits per layer)")
        metric, _ = parse_target(self.target)
        allowed = MODE_METRICS[(self.mode, self.granularity)]
        if metric not in allowed:
            raise ValueError(f"a {metric}= budget cannot be met in mode {self.mode!r} ({self.granularity}); "
                             f"use one of: {', '.join(m + '=' for m in allowed)}")
        if self.eval_precision != "fp32" and self.mode != "prune":
            raise ValueError(f"eval_precision {self.eval_precision} works with mode 'prune' only: half-precision "
                             "kernels would round the fake-quantized weights off their grid; use fp32")
        proxy = parse_proxy(self.proxy)
        if self.reconstruct is not None and proxy.name in ("auto", "vanilla"):  # the older switch
            proxy = parse_proxy("reconstruct" if self.reconstruct else "vanilla")
        self.proxy = proxy.name
        self.reconstruct = proxy.reconstruct if proxy.name != "auto" else None
        return self

