"""The report's statistics, as small pure functions: mean, sample std, standard error, Student-t
95 % intervals, and the difference of two methods (paired by seed, or unpaired with Welch's
standard error).

One quantity is reported everywhere: a mean with its standard error (SE) and a t-based 95 %
interval. With 3 seeds the interval is about 4.3 SE wide on each side (t_{0.975,2} = 4.303):
small samples are uncertain, and the interval says so where an SE alone would not.

The t quantile is computed here rather than taken from scipy (not a dependency of sdrun): the
regularized incomplete beta function by its continued fraction, then bisection. Welch's degrees
of freedom are not whole numbers, so a table of integer df would not do.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

LEVEL = 0.95
MIN_PAIRS = 2  # a paired comparison needs at least this many seeds
# Values closer than this (relative to their size) are equal: `100 - 71.29` five times has a
# standard deviation of 1.8e-15 from float rounding alone, and an interval of that width would
# claim a certainty that equal values do not give.
EQUAL_TOLERANCE = 1e-9
EVERY_VALUE_EQUAL = "no interval: every value equal"


def mean(values: Sequence[float]) -> Optional[float]:
    return math.fsum(values) / len(values) if values else None


def sample_std(values: Sequence[float]) -> Optional[float]:
    """Standard deviation with n - 1 in the denominator; None below 2 values."""
    n = len(values)
    if n < 2:
        return None
    m = math.fsum(values) / n
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def all_equal(values: Sequence[float]) -> bool:
    """Whether the values are one value up to float rounding (EQUAL_TOLERANCE)."""
    if not values:
        return False
    scale = max(1.0, *(abs(v) for v in values))
    return max(values) - min(values) <= EQUAL_TOLERANCE * scale


def standard_error(values: Sequence[float]) -> Optional[float]:
    """Standard error of the mean, std / sqrt(n); None below 2 values."""
    std = sample_std(values)
    return None if std is None else std / math.sqrt(len(values))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), DLMF 8.17.22."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):  # where the fraction converges fast
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on `t_cdf` (monotone, so it always converges)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def bonferroni_level(k: int, level: float = LEVEL) -> float:
    """Each interval's level so that k intervals hold together at `level`: 1 - (1 - level)/k."""
    return 1.0 - (1.0 - level) / max(1, k)


def t_interval(
    center: float, se: Optional[float], df: Optional[float], level: float = LEVEL
) -> Optional[tuple[float, float]]:
    """center +- t_{(1+level)/2, df} x se; None without an SE, and None for an SE of 0 (values
    all equal): a zero-width interval would claim a certainty a few equal runs do not give."""
    if se is None or df is None or df <= 0 or se == 0.0:
        return None
    half = t_quantile(0.5 + level / 2.0, df) * se
    return (center - half, center + half)


def mean_interval(values: Sequence[float]) -> Optional[tuple[float, float]]:
    """t-based 95 % interval of the mean (n - 1 degrees of freedom); None below 2 values and
    when every value is equal (all_equal)."""
    m = mean(values)
    if m is None or all_equal(values):
        return None
    return t_interval(m, standard_error(values), len(values) - 1)


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> Optional[float]:
    """Welch-Satterthwaite degrees of freedom of a difference of two means."""
    wa, wb = var_a / n_a, var_b / n_b
    denom = wa * wa / (n_a - 1) + wb * wb / (n_b - 1)
    return None if denom == 0.0 else (wa + wb) ** 2 / denom


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) over the samples it used, with its SE and t-based 95 % interval."""

    gain: float
    se: Optional[float]
    df: Optional[float]
    ci95: Optional[tuple[float, float]]
    paired: bool
    n_a: int  # samples of each side the difference used
    n_b: int
    mean_a: float  # the means of exactly those samples: gain = mean_a - mean_b
    mean_b: float
    keys_a: tuple  # which samples (seeds) of each side were used
    keys_b: tuple
    no_interval: Optional[str] = None  # why there is no interval, when there is none

    @property
    def pairing(self) -> str:
        return f"paired n={self.n_a}" if self.paired else "unpaired"

    @property
    def includes_zero(self) -> Optional[bool]:
        """Whether the interval includes 0 (no detectable difference); None without one."""
        return None if self.ci95 is None else self.ci95[0] <= 0.0 <= self.ci95[1]


def why_no_interval(*sides: Sequence[float]) -> Optional[str]:
    """Why samples give no t interval (None: they give one): fewer than 2 values on a side,
    or no spread at all (every value equal: SE 0)."""
    if any(len(side) < 2 for side in sides):
        return "no interval: fewer than 2 runs on a side"
    if all(all_equal(side) for side in sides):
        return EVERY_VALUE_EQUAL
    return None


def paired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> Difference:
    """Per-key differences a[k] - b[k] over the keys both have: mean, SE, interval (df k - 1)."""
    keys = tuple(sorted(set(a) & set(b), key=str))
    if len(keys) < MIN_PAIRS:
        raise ValueError(f"a paired difference needs {MIN_PAIRS} shared keys, got {len(keys)}")
    diffs = [a[k] - b[k] for k in keys]
    gain, se = math.fsum(diffs) / len(diffs), standard_error(diffs)
    df = len(keys) - 1
    mean_a, mean_b = mean([a[k] for k in keys]), mean([b[k] for k in keys])
    ci = None if all_equal(diffs) else t_interval(gain, se, df)
    return Difference(gain, se, df, ci, True, len(keys), len(keys),
                      mean_a, mean_b, keys, keys, why_no_interval(diffs))  # fmt: skip


def unpaired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> Difference:
    """Difference of the means of all samples, Welch's SE sqrt(s_a^2/n_a + s_b^2/n_b) and
    Welch-Satterthwaite df; no SE unless each side has 2 samples."""
    if not a or not b:
        raise ValueError("an unpaired difference needs a sample on each side")
    va, vb = list(a.values()), list(b.values())
    mean_a, mean_b = mean(va), mean(vb)
    gain = mean_a - mean_b
    sa, sb = sample_std(va), sample_std(vb)
    se = df = None
    if sa is not None and sb is not None:
        se = math.sqrt(sa * sa / len(va) + sb * sb / len(vb))
        df = welch_df(sa * sa, len(va), sb * sb, len(vb))
    keys_a, keys_b = (tuple(sorted(x, key=str)) for x in (a, b))
    ci = None if all_equal(va) and all_equal(vb) else t_interval(gain, se, df)
    return Difference(gain, se, df, ci, False, len(va), len(vb),
                      mean_a, mean_b, keys_a, keys_b, why_no_interval(va, vb))  # fmt: skip


def pairs(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> bool:
    """Whether to pair: only when both sides have exactly the same keys (seeds), at least
    MIN_PAIRS. The same seed gives both methods the same initial weights and data order, so
    per-seed differences are less noisy; but pairing on part of the seeds drops the other
    runs (3 runs against 3 sharing 2 seeds would be a paired n=2 with 1 degree of freedom)
    and selects which runs count. Welch over every run uses all of them and needs no choice."""
    return len(a) >= MIN_PAIRS and set(a) == set(b)


def difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> Difference:
    """Paired on the seeds when both sides have the same ones (`pairs`), else unpaired over
    every sample with Welch's standard error and degrees of freedom."""
    return paired_difference(a, b) if pairs(a, b) else unpaired_difference(a, b)
