"""The compression environment: one episode = one compression policy, one step = one decision."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from amc.budget import FLOAT_BITS, amc_clip, bisect, bit_floors, limit, lower_bits
from amc.compress import apply_policy, draw_inputs
from amc.config.env import EnvSettings
from amc.config.flat import FlatConfig, flat_config
from amc.cost import CostModel, kept_channels
from amc.errors import AmcError
from amc.policy import GroupDecision, LayerDecision, Policy, Scoring, parse_target
from amc.proxies import resolve_proxy
from amc.pruning import Pruner
from amc.training import evaluate as top1
from amc.utils import resolve_device
from envs.rewards import REWARDS
from search_spaces import space_for

log = logging.getLogger(__name__)

__all__ = ["EnvConfig", "CompressionEnv", "Decision", "OBS_FEATURES"]

#: observation features, in order (all in [0, 1])
OBS_FEATURES = (
    "index",  # decision index / (n - 1)
    "is_linear", "is_depthwise",  # layer type (AMC's "type")
    "in_channels", "out_channels", "stride", "kernel", "params", "macs", "feature_size",  # min-max scaled
    "is_prune", "is_w_bits", "is_a_bits",  # decision kind
    "reduced",  # cost already removed / original cost (budget's unit)
    "rest",  # cost the undecided decisions could still remove / original cost
    "prev_action",  # previous (clipped) action
    "cost_ratio",  # running cost / original (undecided decisions counted uncompressed)
    "target",  # budget ratio
)


class _EnvConfigBase(FlatConfig):
    @property
    def metric(self) -> str:
        return parse_target(self.target)[0]

    @property
    def ratio(self) -> float:
        return parse_target(self.target)[1]


#: everything the environment needs besides the model and the data: the flat view of
#: :class:`amc.config.env.EnvSettings`, which owns the defaults and checks
EnvConfig = flat_config("EnvConfig", EnvSettings, module=__name__, base=_EnvConfigBase, keys="env option(s)",
                        doc="""\
Everything the environment needs besides the model and the data (:class:`amc.config.env.EnvSettings`).

``target`` is ``METRIC=RATIO`` of the uncompressed float32 model: ``macs``, ``params``, ``size``
(weight storage bits), ``bitops`` (MACs x w_bits x a_bits) or ``latency`` (per-layer table).

``proxy`` is what is done to a compressed model before it is scored (:mod:`amc.proxies`:
``auto``, ``vanilla``, ``bn``, ``reconstruct``, ``reconstruct+bn``, ``ft:K``). ``reconstruct`` is
the older switch: with proxy ``auto``, ``True`` means ``reconstruct`` and ``False`` ``vanilla``. The proxy's
``calibration_size`` train images are drawn with ``calibration_seed``, not the search's seed, so two
searches score a policy alike.

``budget_band`` > 0 makes the budget two-sided: prune and bit actions are also clipped from below so
that every episode ends within ``[target (1 - band), target]`` (as far as channel and bit steps allow),
instead of wasting accuracy far under the budget. What the episode can still reach counts undecided
layers at the widest bits of the space, not as float.

The defaults are ``amc search``'s except :data:`amc.config.env.LIBRARY_DEFAULTS` (``budget_band=0``:
AMC's one-sided clip, ``eval_batch_size=1000``, ``device="cpu"``). A bad value is one
:class:`amc.errors.AmcError` line naming the option.
""")


@dataclass
class Decision:
    """One step of an episode."""

    kind: str  # "prune" | "sparsity" | "w_bits" | "a_bits"
    layer: int  # index of the layer whose features describe the decision
    group: int = -1  # prunable group (prune decisions)


@dataclass
class _State:
    fractions: np.ndarray  # kept fraction per group
    density: np.ndarray  # kept weight fraction per layer (fine granularity)
    w_bits: np.ndarray  # per layer, 32 = float
    a_bits: np.ndarray
    actions: list[float] = field(default_factory=list)

    def per_layer(self, kind: str) -> np.ndarray:
        """The per-layer array a ``sparsity``, ``w_bits`` or ``a_bits`` decision sets."""
        return {"sparsity": self.density, "w_bits": self.w_bits, "a_bits": self.a_bits}[kind]


class CompressionEnv(gym.Env):
    """Walks the decisions of one compression policy of a trained model (AMC / HAQ).

    **Episode** (``n_decisions`` steps): ``prune`` mode, one step per prunable channel group (coupled
    layers share one decision; see :mod:`amc.graph`) or, with ``granularity="fine"``, one per layer
    (unstructured sparsity); ``quant`` mode, two steps per layer (weight bits, then bits of the layer's
    input activation; the first and last layers stay at 8 bits unless ``first_last_8bit=False``);
    ``joint`` mode, per layer in execution order: the keep ratio of the group it leads (if any), then
    its weight and activation bits; ``joint`` with ``granularity="fine"`` (Deep Compression), per layer
    a weight density then weight bits (activations stay float; the budget is ``size=``, counted as
    :mod:`amc.sparse` stores sparse layers).

    **Observation** ``Box(0, 1, (18,), float32)``:

    ====  ==================  ===========================================================
    idx   feature             meaning
    ====  ==================  ===========================================================
    0     index               decision index / (n - 1)
    1-2   is_linear, is_dw    layer type
    3-9   in, out, stride,    layer shape and cost (in/out channels, stride, kernel, params,
          kernel, params,     MACs, input feature size), min-max scaled over the episode's
          macs, feature_size  decisions (AMC)
    10-12 kind flags          prune / weight bits / activation bits
    13    reduced             cost removed so far / original cost (the budget's unit)
    14    rest                cost the undecided steps could still remove / original cost
    15    prev_action         previous clipped action
    16    cost_ratio          running cost / original cost
    17    target              the budget ratio
    ====  ==================  ===========================================================

    **Action** ``Box(0, 1, (1,), float32)``, mapped by :mod:`search_spaces`: a keep ratio
    ``lbound + a (1 - lbound)`` (channels rounded up to ``round_to``), a weight density (fine), or bits
    ``round(a (b_max - b_min + 1) + b_min - 0.5)`` (HAQ).

    **Budget** (the rules of :mod:`amc.budget`): enforced, never merely rewarded. Before a
    prune/sparsity action is applied it is clipped so the target stays reachable if every undecided
    step took its most aggressive value (AMC's rule); bit widths are then lowered from the last layer
    backwards, activations first, never below ``b_min``, until the budget holds (HAQ's rule). Every
    finished episode meets the budget.

    **Reward** 0 until the last step; then ``REWARDS[reward](accuracy, costs)`` with ``accuracy`` the
    top-1 (%) on the held-out val split of the really compressed model, without fine-tuning.
    ``acc``: ``0.01 acc``; ``acc_flops``: ``-0.01 (100 - acc) ln MACs``; ``acc_size``, ``acc_latency``
    likewise. ``info`` of the last step holds ``policy``, ``metrics``, ``actions`` and ``timing``.
    """

    metadata = {"render_modes": []}

    def __init__(self, model: nn.Module, splits: Any, config: EnvConfig | None = None, *,
                 model_spec: dict[str, Any] | None = None, val_data: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> None:
        super().__init__()
        self.config = cfg = config or EnvConfig()
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device).eval()
        self.model_spec = dict(model_spec or {"name": type(model).__name__})
        self.splits = splits
        if val_data is None:
            val_data = splits.tensors("val", device=self.device, limit=cfg.eval_limit)
        self.val_x, self.val_y = val_data
        if cfg.eval_precision != "fp32" and self.val_x.dim() == 4:  # evaluate's half-precision layout, made once
            self.val_x = self.val_x.contiguous(memory_format=torch.channels_last)
        self.pruner = Pruner(self.model, self.val_x[:1], seed=cfg.calibration_seed)
        self.graph = self.pruner.graph
        self.cost = CostModel(self.graph, self.model, round_to=cfg.round_to)
        self.metric, self.target_ratio = cfg.metric, cfg.ratio
        self.reward_fn = REWARDS.get(cfg.reward)
        needs_latency = self.metric == "latency" or cfg.reward == "acc_latency"
        self.latency_table = self._latency_table() if needs_latency else None
        prunes = cfg.mode in ("prune", "joint") and cfg.granularity == "channel"
        # auto: reconstruction whenever channels are chosen (amc fidelity's pick; with bits too, then bn
        # when the model has norm layers), else bn / vanilla
        self.proxy = resolve_proxy(cfg.proxy, self.model, prunes_channels=prunes, quantizes=cfg.mode == "joint")
        if self.proxy.reconstruct and not prunes:
            raise AmcError(f"proxy {self.proxy.name} reconstructs pruned layers: it needs mode prune or joint "
                           "with channel granularity; use --proxy bn or vanilla")
        log.info("evaluation proxy: %s", self.proxy.name)
        # train images (fixed seed, cached for the whole search) for the proxy and activation ranges
        inputs = draw_inputs(splits, proxy=self.proxy, calibration_size=cfg.calibration_size,
                             calibration_seed=cfg.calibration_seed, quantizes=cfg.mode in ("quant", "joint"),
                             device=self.device, teacher=self.model)
        self.calibration, self.quant_calibration, self.proxy_data = (
            inputs.calibration, inputs.quant_calibration, inputs.proxy_data)
        # how every policy of this env is scored: recorded in each, so that amc apply re-measures it exactly
        self.scoring = Scoring(proxy=self.proxy.name, calibration_size=cfg.calibration_size,
                               calibration_seed=cfg.calibration_seed, eval_precision=cfg.eval_precision,
                               eval_batch_size=cfg.eval_batch_size, val_images=len(self.val_y))
        if self.calibration is not None:
            self.pruner.set_calibration(self.calibration)
        self.quant_cache = None
        if cfg.mode in ("quant", "joint"):
            from amc.quantization import QuantCache

            # weight codes, float-model activation statistics and scales, reused across episodes (exact)
            self.quant_cache = QuantCache()

        self.decisions = self._make_decisions()
        if not self.decisions:
            raise AmcError("this model offers no decision in this mode (no prunable group / quantizable layer)")
        self.n_decisions = len(self.decisions)
        self.decision_kinds = [d.kind for d in self.decisions]
        self.spaces = {k: space_for(k, lbound=cfg.lbound, w_bits=cfg.w_bits, a_bits=cfg.a_bits)
                       for k in set(self.decision_kinds)}
        # the layers whose widths are decided, per kind (the band's reach counts the undecided at their widest)
        self._bit_layers = {k: np.array([d.layer for d in self.decisions if d.kind == k], dtype=int)
                            for k in ("w_bits", "a_bits")}
        # the kept-channel counts a keep ratio in [lbound, 1] can give: multiples of round_to, and all
        self._allowed = [np.unique(np.append(np.arange(kept_channels(cfg.lbound, g.channels, g.slot_round_to(cfg.round_to)),
                                                       g.channels + 1, g.slot_round_to(cfg.round_to)), g.channels))
                         for g in self.graph.groups]
        self._static = self._static_features()
        # budgets are relative to the uncompressed float32 model (32-bit weights and activations everywhere)
        self.base_cost = self._cost(self._initial_state(fixed_bits=False))
        self.target_cost = self.target_ratio * self.base_cost
        min_cost = self._cost(self._initial_state(), most_aggressive_from=0)
        if min_cost > limit(self.target_cost):
            raise AmcError(
                f"budget {cfg.target} is unreachable: even with every decision at its most aggressive value "
                f"(lbound={cfg.lbound}, bits >= {cfg.w_bits[0]}/{cfg.a_bits[0]}) the model keeps "
                f"{min_cost / self.base_cost:.3f} of its {self.metric}; raise the target or lower --lbound")
        self.base_accuracy = self.evaluate(self.model)

        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(OBS_FEATURES),), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
        self._t = 0
        self._state = self._initial_state()

    # ----------------------------------------------------------------- setup
    def _latency_table(self):
        from amc.latency import LatencyTable

        cfg = self.config
        if cfg.latency_table:
            table = LatencyTable.load(cfg.latency_table)
            if table.layers != [ly.name for ly in self.graph.layers]:
                raise AmcError(f"latency table {cfg.latency_table!r} was built for another model")
            return table
        log.info("building the per-layer latency table on %s (batch %d)", self.device, cfg.latency_batch)
        return LatencyTable.build(self.model, self.graph, batch_size=cfg.latency_batch, threads=cfg.latency_threads,
                                  device=self.device)

    def _make_decisions(self) -> list[Decision]:
        cfg, layers = self.config, self.graph.layers
        fixed = self._fixed_bit_layers()
        out: list[Decision] = []
        if cfg.granularity == "fine":  # per layer a density, and in joint mode weight bits (activations stay float)
            return [d for ly in layers for d in (Decision("sparsity", ly.index), Decision("w_bits", ly.index))
                    if d.kind == "sparsity" or (cfg.mode == "joint" and ly.index not in fixed)]
        leader_of = {self.graph.layer(g.leader).index: g.index for g in self.graph.groups}
        for ly in layers:
            if cfg.mode in ("prune", "joint") and ly.index in leader_of:
                out.append(Decision("prune", ly.index, leader_of[ly.index]))
            if cfg.mode in ("quant", "joint") and ly.index not in fixed:
                out += [Decision("w_bits", ly.index), Decision("a_bits", ly.index)]
        return out

    def _fixed_bit_layers(self) -> set[int]:
        if self.config.mode == "prune" or not self.config.first_last_8bit:
            return set()
        return {0, len(self.graph.layers) - 1}

    def _initial_state(self, *, fixed_bits: bool = True) -> _State:
        nl = len(self.graph.layers)
        wb, ab = np.full(nl, 32.0), np.full(nl, 32.0)
        for i in self._fixed_bit_layers() if fixed_bits else ():
            wb[i] = 8.0  # HAQ keeps the first and last layers at 8 bits
            if self.config.granularity == "channel":  # fine granularity leaves activations float
                ab[i] = 8.0
        return _State(np.ones(len(self.graph.groups)), np.ones(nl), wb, ab)

    def _static_features(self) -> np.ndarray:
        rows = []
        for d in self.decisions:
            ly = self.graph.layers[d.layer]
            g = self.graph.groups[d.group] if d.kind == "prune" else None  # a group: its layers' sums
            members = [self.graph.layer(n) for n in g.layers] if g is not None else [ly]
            rows.append([ly.in_channels, ly.out_channels if g is None else g.channels, ly.stride[0],
                         ly.kernel[0], sum(m.weight_params for m in members), sum(m.macs for m in members),
                         ly.in_size[0] * ly.in_size[1]])
        a = np.asarray(rows, dtype=np.float64)
        lo, hi = a.min(0), a.max(0)
        return np.where(hi > lo, (a - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)

    # ----------------------------------------------------------------- cost
    def _cost(self, s: _State, *, most_aggressive_from: int | None = None, most_generous: bool = False,
              metric: str | None = None) -> float:
        """Cost of state ``s`` in the budget's unit; with ``most_aggressive_from=t`` the undecided
        decisions from ``t`` on take their most aggressive values; with ``most_generous`` the undecided ones
        take their most generous values (channels and weights are kept until decided; widths, float until
        decided, count at the widest of their space): what the episode can still reach."""
        metric = metric or self.metric
        q, dens, wb, ab = s.fractions, s.density, s.w_bits, s.a_bits
        if most_generous:
            wb, ab = self._widest_undecided(wb, "w_bits"), self._widest_undecided(ab, "a_bits")
        if most_aggressive_from is not None:
            q, dens, wb, ab = q.copy(), dens.copy(), wb.copy(), ab.copy()
            cfg = self.config
            # in joint mode HAQ's walk (_enforce_bits) may still lower every chosen width to the floor,
            # so the channel/density clip counts the decided widths there too: a policy that keeps
            # every channel and meets the budget by bits alone (quant-only's space) stays reachable
            later = self.decisions[most_aggressive_from:]
            bit_decisions = self.decisions if cfg.mode == "joint" else later
            for d in bit_decisions:
                if d.kind == "w_bits":
                    wb[d.layer] = cfg.w_bits[0]
                elif d.kind == "a_bits":
                    ab[d.layer] = cfg.a_bits[0]
            for d in later:
                if d.kind == "prune":
                    q[d.group] = self._allowed[d.group][0] / self.graph.groups[d.group].channels
                elif d.kind == "sparsity":
                    dens[d.layer] = cfg.lbound
        if metric == "latency":
            assert self.latency_table is not None
            return self.latency_table.predict(*self.cost.layer_channels(fractions=q))
        return self.cost.metric(metric, fractions=q, density=dens if self.config.granularity == "fine" else None,
                                w_bits=wb, a_bits=ab)

    def _widest_undecided(self, bits: np.ndarray, kind: str) -> np.ndarray:
        """``bits`` with the undecided widths of ``kind`` (still float) at the widest of their space."""
        layers = self._bit_layers[kind]
        undecided = layers[bits[layers] >= FLOAT_BITS] if len(layers) else layers
        if not len(undecided):
            return bits
        out = bits.copy()
        out[undecided] = self.spaces[kind].b_max
        return out

    def _clip(self, d: Decision, value: float) -> float:
        """AMC's rule (:func:`amc.budget.amc_clip`): the largest value <= ``value`` that keeps the target
        reachable; with a budget band, then the smallest value >= that which keeps ``target (1 - band)``
        reachable."""
        s, t = self._state, self._t
        self._raised = False
        if d.kind == "prune":
            g = self.graph.groups[d.group]

            def cost_with(c: int, **rest: Any) -> float:
                s.fractions[d.group] = c / g.channels
                return self._cost(s, **rest)

            best, self._raised = amc_clip(
                self._allowed[d.group], kept_channels(value, g.channels, g.slot_round_to(self.config.round_to)),
                lowest_cost=lambda c: cost_with(c, most_aggressive_from=t + 1),
                highest_cost=lambda c: cost_with(c, most_generous=True),
                target=self.target_cost, band=self.config.budget_band)
            s.fractions[d.group] = best / g.channels
            return best / g.channels
        if d.kind == "sparsity":

            def fits(density: float) -> bool:
                s.density[d.layer] = density
                return self._cost(s, most_aggressive_from=t + 1) <= limit(self.target_cost)

            if not fits(value):
                s.density[d.layer] = bisect(fits, self.config.lbound, value, steps=40)[0]
            return float(s.density[d.layer])
        # bits are chosen freely; HAQ's rule restores the budget after the last step. With a budget band a
        # width is raised to the narrowest one from which the episode can still reach target (1 - band)
        bits = s.per_layer(d.kind)
        bits[d.layer] = value
        if self.config.budget_band > 0:
            floor, top = self.target_cost * (1.0 - self.config.budget_band), self.spaces[d.kind].b_max
            while bits[d.layer] < top and self._cost(s, most_generous=True) < floor:
                bits[d.layer] += 1
                self._raised = True
        return int(bits[d.layer])

    def _enforce_bits(self) -> None:
        """HAQ (:func:`amc.budget.lower_bits`): while over budget, walk layers last -> first lowering
        activation, then weight bits, never below the spaces' ``b_min``."""
        s, cfg = self._state, self.config
        layers = sorted({d.layer for d in self.decisions if d.kind in ("w_bits", "a_bits")}, reverse=True)
        a_layers = {d.layer for d in self.decisions if d.kind == "a_bits"}

        def over() -> bool:
            return self._cost(s) > limit(self.target_cost)

        lower_bits(layers, s.w_bits, s.a_bits, over=over, a_layers=a_layers,
                   floors=bit_floors(s.w_bits[layers], s.a_bits[layers], lowest=(cfg.w_bits[0], cfg.a_bits[0])))
        if over():
            raise AmcError("internal: the budget could not be restored by lowering bits")

    def cost_of(self, actions: Sequence[float]) -> float:
        """Cost (budget unit) of the policy ``actions`` (one per decision) give when nothing is clipped;
        no evaluation. Undecided first/last layers keep their fixed 8 bits as in an episode."""
        if len(actions) != self.n_decisions:
            raise AmcError(f"cost_of needs {self.n_decisions} actions, got {len(actions)}")
        s = self._initial_state()
        for d, a in zip(self.decisions, actions):
            value = self.spaces[d.kind].to_value(float(a))
            if d.kind == "prune":
                g = self.graph.groups[d.group]
                s.fractions[d.group] = kept_channels(value, g.channels, g.slot_round_to(self.config.round_to)) / g.channels
            else:
                s.per_layer(d.kind)[d.layer] = value
        return self._cost(s)

    def actions_for(self, policy: Policy) -> list[float]:
        """The action vector whose episode gives ``policy`` (up to channel rounding) when nothing is
        clipped: keep ratio -> ``(ratio - lbound) / (1 - lbound)``, bits -> the centre of their action
        interval; what ``policy`` leaves uncompressed (float bits, no group) maps to 1.0."""
        if [ly.name for ly in policy.layers] != [ly.name for ly in self.graph.layers]:
            raise AmcError("the policy was made for another model (its layers differ from this model's)")
        groups = {tuple(g.layers): g for g in policy.groups}
        out: list[float] = []
        for d in self.decisions:
            space = self.spaces[d.kind]
            if d.kind == "prune":
                g = groups.get(tuple(self.graph.groups[d.group].layers))
                out.append(1.0 if g is None else space.to_action(g.channels / g.total))
            elif d.kind == "sparsity":
                sp = policy.layers[d.layer].sparsity
                out.append(1.0 if sp is None else space.to_action(1.0 - sp))
            else:
                bits = getattr(policy.layers[d.layer], d.kind)  # w_bits or a_bits
                out.append(1.0 if bits is None or bits >= space.b_max else space.to_action(max(bits, space.b_min)))
        return out

    @contextmanager
    def unbudgeted(self) -> Iterator[None]:
        """Within the block episodes have no budget: neither AMC's clip nor HAQ's bit lowering nor the
        budget band changes an action (for sensitivity probes); model, proxy and reward are the same."""
        target, cfg = self.target_cost, self.config
        self.target_cost, self.config = math.inf, replace(cfg, budget_band=0.0)
        try:
            yield
        finally:
            self.target_cost, self.config = target, cfg

    # ----------------------------------------------------------------- gym API
    def _obs(self) -> np.ndarray:
        t = min(self._t, self.n_decisions - 1)
        d = self.decisions[t]
        ly = self.graph.layers[d.layer]
        s = self._state
        base = self.base_cost
        current = self._cost(s)
        floor = self._cost(s, most_aggressive_from=self._t)
        prev = s.actions[-1] if s.actions else 1.0
        feats = np.concatenate([
            [t / max(1, self.n_decisions - 1), float(ly.kind == "linear"), float(ly.kind == "depthwise")],
            self._static[t],
            [float(d.kind in ("prune", "sparsity")), float(d.kind == "w_bits"), float(d.kind == "a_bits")],
            [(base - current) / base, (current - floor) / base, prev, current / base, self.target_ratio],
        ])
        return np.clip(feats, 0.0, 1.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._state = self._initial_state()
        return self._obs(), {}

    def step(self, action):
        if self._t >= self.n_decisions:
            raise RuntimeError("episode is over: call reset()")
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))
        if math.isnan(a):
            raise ValueError("action is NaN")
        d = self.decisions[self._t]
        space = self.spaces[d.kind]
        value = self._clip(d, space.to_value(a))
        if self._raised:  # lifted into the budget band
            clipped = max(a, space.to_action(value))
        else:
            clipped = min(a, space.to_action(value)) if d.kind in ("prune", "sparsity") else a
        self._state.actions.append(clipped)
        self._t += 1
        if self._t < self.n_decisions:
            return self._obs(), 0.0, False, False, {}
        if any(k in ("w_bits", "a_bits") for k in self.decision_kinds):
            self._enforce_bits()
        policy, metrics, timing = self._finish()
        info = {"policy": policy, "metrics": metrics, "actions": list(self._state.actions), "timing": timing}
        return self._obs(), float(metrics["reward"]), True, False, info

    # ----------------------------------------------------------------- evaluation
    def policy(self) -> Policy:
        """The policy of the current (finished or partial) episode."""
        cfg, s = self.config, self._state
        groups = [GroupDecision(layers=g.layers, keep_ratio=float(s.fractions[g.index]),
                                channels=int(round(s.fractions[g.index] * g.channels)), total=g.channels)
                  for g in self.graph.groups]
        bits_on = cfg.mode in ("quant", "joint")
        layers = [LayerDecision(name=ly.name, kind=ly.kind,
                                w_bits=int(s.w_bits[ly.index]) if bits_on and s.w_bits[ly.index] < 32 else None,
                                a_bits=int(s.a_bits[ly.index]) if bits_on and s.a_bits[ly.index] < 32 else None,
                                sparsity=float(1 - s.density[ly.index]) if cfg.granularity == "fine" else None)
                  for ly in self.graph.layers]
        return Policy(model=self.model_spec, mode=cfg.mode, granularity=cfg.granularity,
                      budget={"metric": self.metric, "ratio": self.target_ratio, "target": cfg.target},
                      pruning={"importance": cfg.importance, "round_to": cfg.round_to, "lbound": cfg.lbound},
                      scoring=replace(self.scoring), groups=groups if cfg.granularity == "channel" else [],
                      layers=layers)

    def uniform_bits_ratio(self, bits: int, *, metric: str | None = None) -> float:
        """The budget ratio (``metric``, default the env's) of uniform ``bits``-bit weights and
        activations with every channel kept: HAQ's first and last layers at 8 bits when
        ``first_last_8bit``, activations float at fine granularity. The budget of "uniform
        W{bits}A{bits}", the reference point of the quantization benchmarks."""
        metric = metric or self.metric
        if metric in ("macs", "params", "latency"):
            raise AmcError(f"uniform_bits_ratio: the {metric} budget does not depend on bit widths; use size or bitops")
        s = self._initial_state(fixed_bits=False)
        s.w_bits[:] = int(bits)
        if self.config.first_last_8bit:
            s.w_bits[[0, -1]] = 8
        if self.config.granularity == "channel":
            s.a_bits[:] = s.w_bits
        return self._cost(s, metric=metric) / self._cost(self._initial_state(fixed_bits=False), metric=metric)

    def costs(self) -> dict[str, float]:
        s, cm = self._state, self.cost
        out = {"macs": cm.macs(fractions=s.fractions), "params": self._cost(s, metric="params"),
               "size_bits": self._cost(s, metric="size"), "bitops": self._cost(s, metric="bitops")}
        ratios = {"macs_ratio": out["macs"] / cm.base_macs, "params_ratio": out["params"] / cm.base_params,
                  "size_ratio": out["size_bits"] / cm.base_size_bits, "bitops_ratio": out["bitops"] / cm.base_bitops}
        if self.latency_table is not None:
            out["latency_ms"] = self._cost(s, metric="latency")
        return {**out, **ratios}

    def _finish(self) -> tuple[Policy, dict[str, float], dict[str, float]]:
        policy = self.policy()
        t0 = time.perf_counter()
        compressed = apply_policy(self.model, policy, pruner=self.pruner, calibration=self.calibration,
                                  quant_calibration=self.quant_calibration, quant_cache=self.quant_cache,
                                  proxy_data=self.proxy_data, check=False)
        build = time.perf_counter() - t0
        t1 = time.perf_counter()
        acc = self.evaluate(compressed)
        t_eval = time.perf_counter() - t1
        costs = self.costs()
        reward = float(self.reward_fn(acc, costs))
        metrics = {"accuracy": acc, "reward": reward, **costs}
        policy.achieved = {k: v for k, v in costs.items() if k.endswith("_ratio") or k == "latency_ms"}
        policy.accuracy = {"base_val_top1": self.base_accuracy, "val_top1": acc}
        t_proxy = self.proxy_data.seconds if self.proxy_data is not None else 0.0
        timing = {"prune": self.pruner.timing.prune, "reconstruct": self.pruner.timing.reconstruct,
                  "quantize": max(0.0, build - self.pruner.timing.prune - self.pruner.timing.reconstruct - t_proxy),
                  "proxy": t_proxy, "evaluate": t_eval}
        return policy, metrics, timing

    def evaluate(self, model: nn.Module) -> float:
        """Top-1 (%) on the env's val images (under autocast when ``eval_precision`` is not fp32)."""
        return top1(model.to(self.device), (self.val_x, self.val_y), device=self.device,
                    batch_size=self.config.eval_batch_size, precision=self.config.eval_precision)
