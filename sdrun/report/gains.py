"""Gains between rows: SD's over each baseline, and each self-distillation method's over the
cross-entropy baseline (cosine).

A row is compared with every other row of the same dataset and network whose settings agree
with it wherever both read a setting (identity.differences); every pair left out is listed with
the settings that differ. The gain is in top-1 points (= error points removed), with its
standard error, degrees of freedom and t-based 95 % interval (stats.difference): paired on the
seeds when both rows have exactly the same seeds (a born-again row pairs on its chain's root
seed), else unpaired (Welch) over all runs of both rows.

Many comparisons: SD against 10 baselines at 95 % each would show an interval excluding 0 for
about a third of such tables when no method differs. So one SD row per data set and network is
primary (primary.py), its k gains get a simultaneous interval beside the plain one (Bonferroni:
each at 1 - 0.05/k), and two of them are the primary comparisons: SD vs cyclic (the same
schedule: the teacher alone) and SD vs cosine (SD's recipe against the CE baseline). Gains of
other SD rows (sweep cells) are exploratory.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdrun.report import stats
from sdrun.report.identity import differences
from sdrun.report.method_catalog import CATALOG
from sdrun.report.primary import primary_row
from sdrun.report.table import Row

SD, CE = "sd", "cosine"
# The one-run self-distillation methods: their own recipe is cosine's, so cosine is their CE
# baseline (method_catalog: their label is bare on cosine).
SELF_KD = tuple(n for n, m in CATALOG.items()
                if m.teacher is None and n != "none" and m.label("cosine") == n)  # fmt: skip
ISOLATES = {
    "cyclic": "primary: the teacher alone (same schedule)",
    "cosine": "primary: SD's recipe vs the CE baseline",
}
PRIMARY, EXPLORATORY, FAMILY = "primary", "exploratory", "over cosine"


@dataclass
class Gain:
    sd: Row  # the row whose gain it is (SD, or a self-distillation method over cosine)
    baseline: Row
    diff: stats.Difference
    role: str = PRIMARY  # primary (the headline SD row's), exploratory, or over cosine
    family_size: int = 1  # k: the comparisons its simultaneous interval accounts for

    @property
    def uses_all_runs(self) -> bool:
        """Whether the gain is over every run of both rows (else: the shared seeds only)."""
        return (self.diff.n_a, self.diff.n_b) == (self.sd.n, self.baseline.n)

    @property
    def comparison(self) -> str:
        """What the comparison isolates, for the primary SD row's."""
        return ISOLATES.get(self.baseline.method, "") if self.role == PRIMARY else ""

    @property
    def simultaneous(self) -> Optional[tuple[float, float]]:
        """The Bonferroni interval: all `family_size` of them hold together at 95 %."""
        if self.diff.ci95 is None:
            return None
        level = stats.bonferroni_level(self.family_size)
        return stats.t_interval(self.diff.gain, self.diff.se, self.diff.df, level)


@dataclass
class NotCompared:
    sd: Row
    baseline: Row
    reasons: list[str]


@dataclass
class Gains:
    gains: list[Gain] = field(default_factory=list)
    not_compared: list[NotCompared] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # which SD row is primary, and why


def compare(row: Row, base: Row, out: Gains, role: str) -> Optional[Gain]:
    reasons = differences(row.signature, base.signature)
    if not row.runs or not base.runs:
        reasons.append("no complete run on one side (all diverged)")
    if reasons:
        out.not_compared.append(NotCompared(row, base, reasons))
        return None
    gain = Gain(row, base, stats.difference(row.top1_by_seed(), base.top1_by_seed()), role)
    out.gains.append(gain)
    return gain


def family_of(gain: Gain) -> tuple:
    """Which gains are counted together: one SD row's (SD against each baseline), or every
    self-distillation method's over cosine on one network."""
    if gain.role == FAMILY:
        return (FAMILY, gain.sd.dataset, gain.sd.model)
    return (gain.role, id(gain.sd))


def _families(gains: list[Gain]) -> None:
    """Each gain's k: the size of its family."""
    for gain in gains:
        gain.family_size = sum(1 for g in gains if family_of(g) == family_of(gain))


def sd_gains(rows: Sequence[Row], sweeps: Collection[Path] = ()) -> Gains:
    """Every SD row against every other row of its dataset and network (SD rows aside), and
    every self-distillation row against cosine; `sweeps`: folders whose rows are exploratory."""
    out = Gains()
    for key in dict.fromkeys((r.dataset, r.model) for r in rows):
        same = [r for r in rows if (r.dataset, r.model) == key]
        sd_rows = [r for r in same if r.method == SD]
        primary, why = primary_row(sd_rows, sweeps) if sd_rows else (None, "")
        if sd_rows and (len(sd_rows) > 1 or primary is None):
            name = f"{primary.label} ({why})" if primary is not None else why
            out.notes.append(f"{key[0]} {key[1]}: primary SD row: {name}")
        for sd in sd_rows:
            role = PRIMARY if sd is primary else EXPLORATORY
            for base in (r for r in same if r.method != SD):
                compare(sd, base, out, role)
        for row in (r for r in same if r.method in SELF_KD):
            for base in (r for r in same if r.method == CE):
                compare(row, base, out, FAMILY)
    _families(out.gains)
    return out


def rows_without_sd(rows: list[Row]) -> list[Row]:
    """Baselines of a dataset and network that has no SD row at all: nothing to compare."""
    with_sd = {(r.dataset, r.model) for r in rows if r.method == SD}
    return [r for r in rows if r.method != SD and (r.dataset, r.model) not in with_sd]


def gain_record(gain: Gain) -> dict[str, Any]:
    d, low, high = gain.diff, *(gain.simultaneous or (None, None))
    return {
        "dataset": gain.sd.dataset,
        "model": gain.sd.model,
        "sd": gain.sd.label,
        "baseline": gain.baseline.label,
        "role": gain.role,
        "comparison": gain.comparison,
        "gain": d.gain,
        "gain_se": d.se,
        "gain_df": d.df,
        "gain_ci95_low": None if d.ci95 is None else d.ci95[0],
        "gain_ci95_high": None if d.ci95 is None else d.ci95[1],
        "ci95_includes_0": None if d.includes_zero is None else str(d.includes_zero).lower(),
        "n_comparisons": gain.family_size,
        "simultaneous_level": stats.bonferroni_level(gain.family_size),
        "gain_ci_simultaneous_low": low,
        "gain_ci_simultaneous_high": high,
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
    "dataset", "model", "sd", "baseline", "role", "comparison", "gain", "gain_se", "gain_df",
    "gain_ci95_low", "gain_ci95_high", "ci95_includes_0", "n_comparisons", "simultaneous_level",
    "gain_ci_simultaneous_low", "gain_ci_simultaneous_high", "pairing", "n_sd", "n_base",
    "sd_top1_mean", "base_top1_mean", "sd_seeds", "base_seeds", "n_sd_diverged",
    "n_base_diverged",
]  # fmt: skip
