"""SD's gain over each baseline: which rows are compared, and by how much SD is better.

An SD row is compared with every other row of the same dataset and network whose settings
agree with it wherever both read a setting (identity.differences); every row left out is
listed with the settings that differ. The gain is in top-1 points (= error points SD
removes), with its standard error and t-based 95 % interval (stats.difference): paired on the
seeds both rows have when they are at least 2 and at least 2/3 of each row's runs (a born-again
row pairs on its chain's root seed), else unpaired (Welch) over all runs of both rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdrun.report import stats
from sdrun.report.identity import differences
from sdrun.report.table import Row

SD = "sd"


@dataclass
class Gain:
    sd: Row
    baseline: Row
    diff: stats.Difference

    @property
    def uses_all_runs(self) -> bool:
        """Whether the gain is over every run of both rows (else: the shared seeds only)."""
        return (self.diff.n_a, self.diff.n_b) == (self.sd.n, self.baseline.n)


@dataclass
class NotCompared:
    sd: Row
    baseline: Row
    reasons: list[str]


def sd_gains(rows: list[Row]) -> tuple[list[Gain], list[NotCompared]]:
    """(gains, pairs left out with why): every SD row against every other row of its
    dataset and network."""
    gains, skipped = [], []
    for sd in (r for r in rows if r.method == SD):
        for base in rows:
            if base.method == SD or (base.dataset, base.model) != (sd.dataset, sd.model):
                continue
            reasons = differences(sd.signature, base.signature)
            if not sd.runs or not base.runs:
                reasons.append("no complete run on one side (all diverged)")
            if reasons:
                skipped.append(NotCompared(sd, base, reasons))
            else:
                gains.append(Gain(sd, base, stats.difference(sd.top1_by_seed(),
                                                              base.top1_by_seed())))  # fmt: skip
    return gains, skipped


def rows_without_sd(rows: list[Row]) -> list[Row]:
    """Baselines of a dataset and network that has no SD row at all: nothing to compare."""
    with_sd = {(r.dataset, r.model) for r in rows if r.method == SD}
    return [r for r in rows if r.method != SD and (r.dataset, r.model) not in with_sd]


def gain_record(gain: Gain) -> dict[str, Any]:
    d = gain.diff
    return {
        "dataset": gain.sd.dataset,
        "model": gain.sd.model,
        "sd": gain.sd.label,
        "baseline": gain.baseline.label,
        "gain": d.gain,
        "gain_se": d.se,
        "gain_ci95_low": None if d.ci95 is None else d.ci95[0],
        "gain_ci95_high": None if d.ci95 is None else d.ci95[1],
        "ci95_includes_0": None if d.includes_zero is None else str(d.includes_zero).lower(),
        "pairing": d.pairing,
        "n_sd": d.n_a,
        "n_base": d.n_b,
        "sd_top1_mean": d.mean_a,
        "base_top1_mean": d.mean_b,
        "sd_seeds": " ".join(map(str, d.keys_a)),
        "base_seeds": " ".join(map(str, d.keys_b)),
        "n_sd_diverged": len(gain.sd.diverged),
        "n_base_diverged": len(gain.baseline.diverged),
    }


GAIN_COLUMNS = [
    "dataset", "model", "sd", "baseline", "gain", "gain_se", "gain_ci95_low", "gain_ci95_high",
    "ci95_includes_0", "pairing", "n_sd", "n_base", "sd_top1_mean", "base_top1_mean",
    "sd_seeds", "base_seeds", "n_sd_diverged", "n_base_diverged",
]  # fmt: skip
