"""The report's statistics (sdrun/report/stats.py), checked against known values."""

from __future__ import annotations

import math
import statistics

import pytest

from sdrun.report import stats

# Student t 0.975 quantiles from printed tables: df -> t
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 30: 2.0423}


@pytest.mark.parametrize("df,expected", sorted(T975.items()))
def test_t_quantile_matches_the_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_closed_forms_and_limits():
    for p in (0.6, 0.9, 0.975, 0.995):
        # df=1 is the Cauchy distribution; df=2 has t = (2p-1) / sqrt(2p(1-p))
        assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert stats.t_quantile(p, 2) == pytest.approx(
            (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9
        )
    assert stats.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)  # the normal
    assert stats.t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)


def test_t_cdf_for_a_fractional_df_matches_integrating_the_density():
    df, t = 2.5, 1.7  # Welch's df are rarely whole numbers

    def density(x: float) -> float:
        c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        return c * (1 + x * x / df) ** (-(df + 1) / 2)

    n, h = 2000, t / 2000  # Simpson's rule over [0, t]; the density is symmetric
    area = density(0) + density(t) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
    assert stats.t_cdf(t, df) == pytest.approx(0.5 + area * h / 3, abs=1e-9)
    q = stats.t_quantile(0.975, df)
    assert stats.t_cdf(q, df) == pytest.approx(0.975, abs=1e-10)
    assert T975[3] < q < T975[2]


def test_mean_std_standard_error_and_interval():
    values = [71.0, 72.0, 73.5]
    assert stats.mean(values) == pytest.approx(statistics.fmean(values))
    assert stats.sample_std(values) == pytest.approx(statistics.stdev(values))
    se = statistics.stdev(values) / math.sqrt(3)
    assert stats.standard_error(values) == pytest.approx(se)
    m = statistics.fmean(values)
    assert stats.mean_interval(values) == pytest.approx(
        (m - 4.3027 * se, m + 4.3027 * se), abs=1e-3
    )
    assert stats.sample_std([1.0]) is None and stats.standard_error([1.0]) is None
    assert stats.mean_interval([1.0]) is None and stats.mean([]) is None


def test_paired_difference_uses_the_shared_keys_only():
    a = {0: 71.0, 1: 72.0, 2: 73.0, 9: 50.0}
    b = {0: 70.0, 1: 70.0, 2: 70.5}
    assert not stats.difference(a, b).paired  # seed 9 has no pair: Welch over every run
    d = stats.paired_difference(a, b)
    diffs = [1.0, 2.0, 2.5]
    se = statistics.stdev(diffs) / math.sqrt(3)
    assert d.paired and d.pairing == "paired n=3" and (d.n_a, d.n_b) == (3, 3)
    assert d.gain == pytest.approx(statistics.fmean(diffs)) and d.se == pytest.approx(se)
    assert d.df == 2 and d.ci95 == pytest.approx((d.gain - 4.3027 * se, d.gain + 4.3027 * se),
                                                 abs=1e-3)  # fmt: skip
    assert d.includes_zero  # 1.83 +- 1.90: three seeds cannot tell this from 0
    assert d.mean_a - d.mean_b == pytest.approx(d.gain) and d.keys_a == (0, 1, 2)


def test_unpaired_difference_is_welch():
    a, b = {0: 71.0, 1: 72.0, 2: 74.0}, {5: 70.0, 6: 70.5}
    d = stats.difference(a, b)
    va, vb = statistics.variance(a.values()), statistics.variance(b.values())
    se = math.sqrt(va / 3 + vb / 2)
    df = (va / 3 + vb / 2) ** 2 / ((va / 3) ** 2 / 2 + (vb / 2) ** 2 / 1)
    assert not d.paired and d.pairing == "unpaired" and (d.n_a, d.n_b) == (3, 2)
    assert d.gain == pytest.approx(72.333333 - 70.25) and d.se == pytest.approx(se)
    assert d.df == pytest.approx(df)
    half = stats.t_quantile(0.975, df) * se
    assert d.ci95 == pytest.approx((d.gain - half, d.gain + half))
    # one shared key is not a pairing: all runs, unpaired
    assert not stats.difference({0: 1.0, 1: 2.0}, {1: 1.0, 2: 3.0}).paired
    one = stats.difference({0: 1.0}, {0: 2.0})
    assert one.se is None and one.ci95 is None and one.includes_zero is None


def test_pairing_needs_the_same_seeds_and_no_interval_without_spread():
    three = {0: 1.0, 1: 2.0, 2: 4.0}
    assert not stats.difference(three, {1: 1.0, 2: 2.5, 7: 0.0}).paired  # 2 of 3 shared
    assert stats.difference(three, {2: 1.0, 0: 2.5, 1: 0.0}).paired  # the same seeds
    assert not stats.difference({0: 1.0}, {0: 2.0}).paired  # one seed: no pairs to spread
    flat = stats.difference({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})  # every difference is 1
    assert flat.paired and flat.se == 0.0 and flat.ci95 is None
    assert flat.no_interval == "no interval: every value equal"
    assert stats.mean_interval([5.0, 5.0, 5.0]) is None
