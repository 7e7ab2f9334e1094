"""Comparing unlearning methods at matched forgetting depth (pure Python, no torch).

A method's learning-rate sweep traces a curve from the original model (lr = 0: nothing forgotten)
towards heavy forgetting. To ask "at the same forgetting, which method keeps more utility?", each
curve is read at a target unlearning accuracy UA* (usually Retrain's UA):

- walk the curve in learning-rate order, starting at the original model;
- take the first point whose UA reaches UA* (``ua >= UA*``);
- linearly interpolate the utility (TA or RA) between that point and the one before it.

Where the two bracketing runs are far apart in UA (GA's curve often jumps from "nothing forgotten"
to "collapsed" between neighbouring learning rates), no run near UA* exists and the interpolated
number describes no model; such a reading is marked invalid (``jump > max_jump``) and left out of
the comparison, and the utility of the first run past UA* is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Readings whose bracketing runs differ by more than this many UA points describe no real model.
DEFAULT_MAX_JUMP = 10.0


@dataclass(frozen=True)
class Matched:
    """A curve read at UA = ``target``."""

    target: float
    value: float  # interpolated utility at the target (nan if the curve never reaches it)
    reached: bool  # some point of the curve has ua >= target
    lo_ua: float  # UA of the bracketing points (equal when the first point already reaches it)
    hi_ua: float
    first_value: float  # utility of the first point with ua >= target (a real run); nan if not reached
    max_jump: float = DEFAULT_MAX_JUMP

    @property
    def exact(self) -> bool:
        return self.reached and self.hi_ua == self.target

    @property
    def jump(self) -> float:
        return self.hi_ua - self.lo_ua if self.reached else math.nan

    @property
    def valid(self) -> bool:
        """The interpolated value stands for a model that (nearly) exists."""
        return self.reached and (self.exact or self.jump <= self.max_jump)


def utility_at_forgetting(ua: Sequence[float], utility: Sequence[float], target: float,
                          max_jump: float = DEFAULT_MAX_JUMP) -> Matched:
    """Reads a curve (points in learning-rate order, the original model first) at UA = ``target``.

    >>> m = utility_at_forgetting([0, 8, 16], [99, 95, 85], 10)
    >>> m.value, m.valid
    (92.5, True)
    """
    if len(ua) != len(utility):
        raise ValueError(f"ua and utility differ in length: {len(ua)} vs {len(utility)}")
    if not len(ua):
        raise ValueError("an empty curve")
    for i, (u, v) in enumerate(zip(ua, utility)):
        if not (math.isfinite(u) and math.isfinite(v)):
            raise ValueError(f"point {i} is not finite: ua={u}, utility={v}")
    for i, u in enumerate(ua):
        if u >= target:
            if i == 0:
                return Matched(target, float(utility[0]), True, float(u), float(u), float(utility[0]), max_jump)
            u0, u1, v0, v1 = float(ua[i - 1]), float(u), float(utility[i - 1]), float(utility[i])
            value = v0 + (v1 - v0) * (target - u0) / (u1 - u0)  # u0 < target <= u1
            return Matched(target, value, True, u0, u1, v1, max_jump)
    return Matched(target, math.nan, False, math.nan, math.nan, math.nan, max_jump)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; nan, nan for none)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Comparison:
    """Method A vs method B at matched forgetting, paired over seeds (only seeds where both are valid)."""

    a_values: tuple[float, ...]  # A's matched utility on the paired seeds
    b_values: tuple[float, ...]
    n_seeds: int  # seeds considered
    a_invalid: int  # seeds where A's reading was missing or invalid
    b_invalid: int

    @property
    def n_paired(self) -> int:
        return len(self.a_values)

    @property
    def diff(self) -> tuple[float, float]:
        """Mean and std over the paired seeds of (A − B), in utility points."""
        return mean_std([a - b for a, b in zip(self.a_values, self.b_values)])

    @property
    def relative_percent(self) -> float:
        """100 × (mean A − mean B) / mean B over the paired seeds."""
        a, b = mean_std(self.a_values)[0], mean_std(self.b_values)[0]
        return 100.0 * (a - b) / b if self.n_paired and b != 0 else math.nan


def compare_matched(a: Sequence[Matched], b: Sequence[Matched]) -> Comparison:
    """Pairs two methods' readings seed by seed (same order), keeping seeds where both are valid."""
    if len(a) != len(b):
        raise ValueError(f"need one reading per seed for both methods, got {len(a)} and {len(b)}")
    pairs = [(x.value, y.value) for x, y in zip(a, b) if x.valid and y.valid]
    return Comparison(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), len(a),
                      sum(not x.valid for x in a), sum(not y.valid for y in b))


def describe_comparison(name_a: str, name_b: str, what: str, comp: Comparison) -> str:
    """One plain sentence: does A keep more ``what`` than B at matched forgetting, and by how much."""
    if comp.n_paired == 0:
        return (f"no seed has a valid matched-forgetting reading for both {name_a} and {name_b} "
                f"({name_a}: {comp.a_invalid}/{comp.n_seeds} missing or across a jump; "
                f"{name_b}: {comp.b_invalid}/{comp.n_seeds}), so the {what} comparison is undecided.")
    (am, asd), (bm, bsd) = mean_std(comp.a_values), mean_std(comp.b_values)
    dm, dsd = comp.diff
    if abs(dm) < 0.05:
        verdict = f"{name_a} and {name_b} keep the same {what}"
    elif dm > 0:
        verdict = f"{name_a} keeps more {what} than {name_b}"
    else:
        verdict = f"{name_a} keeps less {what} than {name_b}"
    wins = sum(x > y + 1e-9 for x, y in zip(comp.a_values, comp.b_values))
    losses = sum(x < y - 1e-9 for x, y in zip(comp.a_values, comp.b_values))
    ties = comp.n_paired - wins - losses
    left_out = comp.n_seeds - comp.n_paired
    return (f"{verdict}: {am:.2f} ± {asd:.2f} vs {bm:.2f} ± {bsd:.2f} %, a difference of {signed(dm)} ± {dsd:.2f} "
            f"points ({signed(comp.relative_percent, 1)}% relative); per seed {name_a} is higher on {wins}, lower on "
            f"{losses}, tied on {ties} of {comp.n_paired} paired seed(s)"
            + (f" ({left_out} seed(s) without a valid reading for both left out)." if left_out else "."))


def signed(value: float, digits: int = 2) -> str:
    """``+1.23`` / ``-1.23``, and ``+0.00`` rather than ``-0.00``."""
    if not math.isfinite(value):
        return "n/a"
    rounded = round(value, digits) + 0.0
    return f"{rounded:+.{digits}f}"
