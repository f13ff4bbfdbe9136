"""RESULTS.md: SD's gain over each baseline, what the intervals say, and the baselines not
compared (with why)."""

from __future__ import annotations

from collections.abc import Sequence

from sdrun.report.escape import md
from sdrun.report.gains import Gain, rows_without_sd
from sdrun.report.md_format import interval, num, table
from sdrun.report.model import Report


def _gain_note(gain: Gain) -> str:
    d, notes = gain.diff, []
    if d.includes_zero:
        notes.append("interval includes 0")
    elif d.ci95 is None:
        notes.append(d.no_interval or "no interval")
    if not gain.uses_all_runs:
        notes.append(f"shared seeds only: {d.n_a} of {gain.sd.n} SD runs, "
                     f"{d.n_b} of {gain.baseline.n} baseline runs")  # fmt: skip
    for side, row in (("SD", gain.sd), ("baseline", gain.baseline)):
        if row.diverged:
            notes.append(f"{side}: {len(row.diverged)} diverged run(s) not in the gain")
    return "; ".join(notes)


def _name(g: Gain) -> str:
    return md(f"{g.sd.label} vs {g.baseline.label} ({g.sd.model})")


def _verdict(all_gains: Sequence[Gain]) -> str:
    """What the intervals say, and for which gains there is none (never "no interval includes
    0" when some gains have no interval at all)."""
    zero = [_name(g) for g in all_gains if g.diff.includes_zero]
    none = [_name(g) for g in all_gains if g.diff.ci95 is None]
    if len(none) == len(all_gains):
        return (
            "No 95 % interval could be computed for any gain (each note says why): "
            "these gains are not evidence either way."
        )
    parts = []
    if zero:
        parts.append("The 95 % interval **includes 0** - no difference shown at this number "
                     f"of seeds - for: {', '.join(zero)}.")  # fmt: skip
    else:
        parts.append("No computed 95 % interval includes 0.")
    if none:
        parts.append(f"No interval could be computed for: {', '.join(none)}.")
    return " ".join(parts)


GAINS_INTRO = (
    "Top-1 points SD is better by (= error points it removes), ± its standard error, and "
    "the t-based 95 % interval. Paired by seed (*paired n=k*: the mean of the k per-seed "
    "differences; a born-again row pairs on its chain's root seed) when the rows share at "
    "least 2 seeds and the shared seeds are at least 2/3 of each row's runs, else "
    "*unpaired*: the difference of the means of all runs, with Welch's standard error "
    "(pairing on a few shared seeds would drop most runs). The top-1 means shown are over "
    "exactly the runs the gain uses. Rows are compared when every setting agrees, the "
    "method aside; a setting one row has and the other lacks is a difference, unless the "
    "row without it does not read it."
)


def gains(report: Report) -> list[str]:
    if not report.gains:
        return []
    lines = []
    for g in report.gains:
        d = g.diff
        lines.append([g.sd.dataset, g.sd.model, g.sd.label, g.baseline.label,
                      num(d.gain) + ("" if d.se is None else f" ± {num(d.se)}"), interval(d.ci95),
                      d.pairing, f"{d.n_a} / {d.n_b}", f"{num(d.mean_a)} / {num(d.mean_b)}",
                      _gain_note(g)])  # fmt: skip
    header = ["dataset", "model", "SD", "baseline", "gain ± SE", "95 % interval", "pairing",
              "n SD / baseline", "top-1 SD / baseline (these runs)", "note"]  # fmt: skip
    return ["", "## SD gain over each baseline", "", GAINS_INTRO, "", *table(header, lines),
            "", _verdict(report.gains)]  # fmt: skip


def not_compared(report: Report) -> list[str]:
    items = [
        f"- {md(n.sd.dataset)} {md(n.sd.model)}: {md(n.sd.label)} vs {md(n.baseline.label)}: "
        + md("; ".join(n.reasons))
        for n in report.not_compared
    ]
    items += [
        f"- {md(r.dataset)} {md(r.model)}: {md(r.label)}: no SD row of this dataset and network"
        for r in rows_without_sd(report.rows)
    ]
    if not items:
        return []
    return ["", "## Baselines not compared, and why", "", *items]
