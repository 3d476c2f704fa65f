"""The budget rules, in one place: AMC's clip, HAQ's bit lowering, the common multiplier, bisection.

A budget is a cost limit ``target`` in any unit (MACs, parameters, weight bits, bit-operations, ms);
a cost *meets* it when ``cost <= limit(target)``, i.e. within a relative :data:`TOLERANCE` that
absorbs float rounding in the sums. Every rule here only ever makes a policy cheaper (apart from the
budget band's lower clip), and each is told the cost of a candidate by a callback, so the same rule
serves the environment's running state (:mod:`envs.compression`), a policy mapped onto another model
(:mod:`amc.transfer`) and the baselines (:mod:`agents.uniform`, :mod:`agents.sensitivity`).

* **AMC's clip** (He et al. 2018, Algorithm 1, "resource-constrained compression"):
  :func:`amc_clip` keeps a decision's value only as large as still lets the episode meet the budget
  if every undecided decision then took its most aggressive value. With a *budget band* it also clips
  from below, so that the episode can still end above ``target (1 - band)`` if every undecided
  decision kept everything.
* **HAQ's bit lowering** (Wang et al. 2019, Sec. 3.3): :func:`lower_bits` walks the layers from the
  last to the first, lowering the activation then the weight width by one bit, round after round,
  until the budget holds. The floor is :func:`bit_floors`: a width is never lowered below the
  smallest the search space offers (``b_min``, HAQ's 2 bits when the space is not known), nor below a
  width the policy already chose (which proves its space went that low).
* **The common multiplier** (:func:`scale_to_budget`): every ratio scaled by one ``m``, never below
  ``min(ratio, lbound)``; the largest ``m`` that meets the budget. It keeps the shape of a policy
  mapped onto another model (transfer).
* **Bisection** (:func:`bisect`, :func:`last_true`): the one monotone search all of these, the
  baselines and the solver agent use; :func:`path_candidates` lists the distinct policies along a
  scaled profile, which the uniform baseline bisects.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from typing import TypeVar

import numpy as np

__all__ = ["TOLERANCE", "FLOAT_BITS", "HAQ_MIN_BITS", "limit", "bisect", "last_true", "path_candidates", "amc_clip",
           "bit_floors", "lower_bits", "scale_to_budget"]

#: relative slack of every budget check: ``cost <= target * (1 + TOLERANCE)``
TOLERANCE = 1e-9
#: the width of an unquantized (float32) tensor; such a tensor is never lowered
FLOAT_BITS = 32
#: HAQ's smallest bit width (its action range is [2, 8]); the floor when a policy's space is unknown
HAQ_MIN_BITS = 2

Num = TypeVar("Num", int, float)


def limit(target: float) -> float:
    """The largest cost that meets budget ``target`` (same unit)."""
    return target * (1.0 + TOLERANCE)


def bisect(pred: Callable[[Num], bool], lo: Num, hi: Num, *, steps: int | None = None,
           stop: Callable[[], bool] | None = None) -> tuple[Num, Num]:
    """Narrow ``[lo, hi]`` onto the point where the monotone ``pred`` (true, then false) turns false.

    ``pred`` is taken to hold at ``lo`` and to fail at ``hi``; neither end is evaluated, so either
    may be a sentinel (``-1``, ``len(candidates)``). With ``steps=None`` both ends are integers and
    the search runs until they are adjacent (``hi - lo == 1``: ``lo`` is the last index where
    ``pred`` holds); otherwise ``steps`` halvings of a float interval. ``stop()``, checked before
    each evaluation, ends the search early (a cap on expensive probes). Returns the final ``(lo, hi)``.
    """
    done = 0
    while (hi - lo > 1) if steps is None else (done < steps):
        if stop is not None and stop():
            break
        mid = (lo + hi) // 2 if steps is None else 0.5 * (lo + hi)
        if pred(mid):
            lo = mid
        else:
            hi = mid
        done += 1
    return lo, hi


def last_true(n: int, pred: Callable[[int], bool]) -> int:
    """The last index ``i`` in ``range(n)`` where the monotone ``pred`` (true, then false) holds, or
    ``-1`` when it holds nowhere; about ``log2(n)`` evaluations."""
    return bisect(pred, -1, n)[0]


def path_candidates(signature: Callable[[float], Hashable], *, s_max: float = 1.0, grid: int = 4096) -> list[float]:
    """The scales at which a monotone path of policies changes, cheapest first.

    ``signature(s)`` is what the policy at scale ``s`` builds (kept channels, bit widths); it is
    sampled at ``grid + 1`` evenly spaced scales in ``[0, s_max]`` and each distinct policy is listed
    once, by the smallest sampled scale that gives it. Bisecting the list costs about
    ``log2(#policies)`` evaluations, however fine the grid.
    """
    out: list[float] = []
    last: Hashable = object()
    for s in np.linspace(0.0, s_max, grid + 1):
        sig = signature(float(s))
        if sig != last:
            out.append(float(s))
            last = sig
    return out


def amc_clip(allowed: Sequence[int], want: int, *, lowest_cost: Callable[[int], float], target: float,
             highest_cost: Callable[[int], float] | None = None, band: float = 0.0) -> tuple[int, bool]:
    """AMC's clip of one decision, over its ``allowed`` values (ascending, e.g. kept channel counts).

    ``lowest_cost(c)``: the episode's cost if this decision takes ``c`` and every undecided one its
    most aggressive value; ``highest_cost(c)``: the cost if every undecided one keeps everything (both
    grow with ``c``). Returns ``(value, raised)``: the largest allowed value ``<= want`` whose
    ``lowest_cost`` meets ``target`` (the smallest allowed one when none does: the caller checked
    that the budget is reachable). With ``band`` > 0, when that value leaves the episode unable to
    reach ``target (1 - band)`` even if nothing else is pruned, it is raised to the smallest allowed
    value that can, but never above the largest the budget allows; ``raised`` says so.
    """
    allowed = list(allowed)
    cap = limit(target)

    def fits(i: int) -> bool:
        return lowest_cost(allowed[i]) <= cap

    below = sum(1 for c in allowed if c <= want)
    best = max(0, last_true(below, fits))
    if band <= 0.0:
        return int(allowed[best]), False
    if highest_cost is None:
        raise ValueError("amc_clip: a budget band needs highest_cost")
    floor = target * (1.0 - band)
    if highest_cost(allowed[best]) >= floor:
        return int(allowed[best]), False
    top = max(best, last_true(len(allowed), fits))  # the most the budget allows
    # the first index in (best, top] that reaches the band (the band is reachable from higher values)
    first = 1 + bisect(lambda i: highest_cost(allowed[i]) < floor, best, top + 1)[0]
    return int(allowed[min(first, top)]), True


def bit_floors(w_bits: Sequence[float], a_bits: Sequence[float], *,
               lowest: tuple[int, int] = (HAQ_MIN_BITS, HAQ_MIN_BITS)) -> tuple[int, int]:
    """HAQ's floor, per kind: ``(weight floor, activation floor)``.

    ``min(b_min, smallest width of that kind in the policy)``: a width is never lowered below what
    the search space offers (``lowest``, the spaces' ``b_min``; HAQ's 2 bits when unknown), and a
    policy that already went lower (a 1-bit search) may be lowered as far as it went itself. Float
    entries (``FLOAT_BITS``) do not count.
    """
    w, a = (min([int(b_min), *(int(b) for b in bits if b < FLOAT_BITS)])
            for bits, b_min in ((w_bits, lowest[0]), (a_bits, lowest[1])))
    return w, a


def lower_bits(order: Sequence[int], w_bits: np.ndarray, a_bits: np.ndarray, *, floors: tuple[int, int],
               over: Callable[[], bool], a_layers: Collection[int] | None = None) -> int:
    """HAQ's walk, in place: while ``over()``, for each layer in ``order`` (last to first) lower its
    activation then its weight width by one bit (never below ``floors = (w, a)``, never a float one),
    checking the budget before each; returns how many bits were lowered. It stops when the budget
    holds or no width can be lowered any more (then ``over()`` is still true). ``a_layers``, when
    given, are the only layers whose activation width may be lowered (those the search decides)."""
    lowered, changed = 0, True
    while changed and over():
        changed = False
        for i in order:
            for bits, floor in ((a_bits, floors[1]), (w_bits, floors[0])):
                if not over():
                    return lowered
                if bits is a_bits and a_layers is not None and i not in a_layers:
                    continue
                if FLOAT_BITS > bits[i] > floor:
                    bits[i] -= 1
                    lowered += 1
                    changed = True
    return lowered


def scale_to_budget(base: np.ndarray, *, lbound: float, fits: Callable[[np.ndarray], bool],
                    steps: int = 50) -> tuple[float, np.ndarray] | None:
    """The common multiplier: ``r' = max(m r, min(r, lbound))`` with the largest ``m`` in [0, 1] for
    which ``fits(r')`` (the cost falls with ``m``); ``(m, r')``, or ``None`` when even ``m = 0`` (every
    ratio at ``min(r, lbound)``) does not fit. Ratios only go down; none goes below ``lbound`` unless
    it already was."""
    base = np.asarray(base, dtype=np.float64)
    floor = np.minimum(base, lbound)

    def scaled(m: float) -> np.ndarray:
        return np.maximum(base * m, floor)

    if fits(scaled(1.0)):
        return 1.0, scaled(1.0)
    if not fits(scaled(0.0)):
        return None
    m, _ = bisect(lambda x: fits(scaled(x)), 0.0, 1.0, steps=steps)
    return m, scaled(m)
