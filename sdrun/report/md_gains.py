"""RESULTS.md: the primary SD row's gains (with simultaneous intervals for its k comparisons),
the exploratory SD rows' gains, each self-distillation method's gain over cosine, what the
intervals say in which direction, and the pairs not compared (with why)."""

from __future__ import annotations

from collections.abc import Sequence

from sdrun.report import stats
from sdrun.report.escape import Markup, md
from sdrun.report.gains import FAMILY, Gain, family_of, rows_without_sd
from sdrun.report.md_format import interval, num, table
from sdrun.report.model import Report

GAINS_INTRO = (
    "Top-1 points the first row is better by (= error points it removes), ± its standard "
    "error, with Welch's degrees of freedom (*df*; n - 1 when paired) and the t-based 95 % "
    "interval, so that each interval can be rebuilt. Paired by seed (*paired n=k*: the mean "
    "of the k per-seed differences; a born-again row pairs on its chain's root seed) only when "
    "both rows have exactly the same seeds, two or more, else *unpaired*: the difference of the "
    "means of all runs, with Welch's standard error (pairing on part of the seeds would drop "
    "the other runs). The top-1 means shown are over exactly the runs the gain uses. Rows are "
    "compared when every setting agrees, the method aside; a setting one row has and the other "
    "lacks is a difference, unless the row without it does not read it. Only **SD vs cyclic** "
    "isolates the teacher (the same cyclic schedule without it); against cosine, step and the "
    "others, the schedule differs too."
)
EXPLORATORY_INTRO = (
    "Gains of the other SD rows (sweep cells, other settings). They were not chosen before the "
    "results: picking the best of them is **a choice made on the test set**, which their "
    "intervals do not account for; with many rows, some interval excludes 0 by chance alone."
)
FAMILY_INTRO = (
    "Each one-run self-distillation method against cosine, the cross-entropy baseline on the "
    "same single cosine cycle (its own recipe), as its paper compares it."
)


def _gain_note(gain: Gain) -> str:
    d, notes = gain.diff, []
    if d.ci95 is None:
        notes.append(d.no_interval or "no interval")
    if not gain.uses_all_runs:
        notes.append(f"shared seeds only: {d.n_a} of {gain.sd.n} runs, "
                     f"{d.n_b} of {gain.baseline.n} baseline runs")  # fmt: skip
    for side, row in (("first row", gain.sd), ("baseline", gain.baseline)):
        if row.diverged:
            notes.append(f"{side}: {len(row.diverged)} diverged run(s) not in the gain")
    return "; ".join(notes)


def _name(g: Gain) -> str:
    return md(f"{g.sd.label} vs {g.baseline.label} ({g.sd.model})")


def _sides(interval: tuple[float, float] | None) -> str | None:
    """Where an interval lies with respect to 0 (None: there is no interval)."""
    if interval is None:
        return None
    if interval[0] > 0:
        return "lies **above 0** (the first row better)"
    if interval[1] < 0:
        return "lies **below 0** (the first row worse)"
    return "**includes 0** (no difference shown at this number of seeds)"


def verdict(gains: Sequence[Gain], simultaneous: bool = False) -> str:
    """Which intervals lie above 0 (the first row better), which below (worse), which include
    0, and for which there is none; never a sentence that hides the direction."""
    side = {id(g): _sides(g.simultaneous if simultaneous else g.diff.ci95) for g in gains}
    none = [g for g in gains if side[id(g)] is None]
    if len(none) == len(gains):
        return ("No 95 % interval could be computed for any gain (each note says why): "
                "these gains are not evidence either way.")  # fmt: skip
    which = "simultaneous interval" if simultaneous else "95 % interval"
    parts = []
    for where in dict.fromkeys(side[id(g)] for g in gains if side[id(g)] is not None):
        found = ", ".join(_name(g) for g in gains if side[id(g)] == where)
        parts.append(f"The {which} {where} for: {found}.")
    if none:
        parts.append(f"No interval could be computed for: {', '.join(map(_name, none))}.")
    return " ".join(parts)


def _multiplicity(gains: Sequence[Gain]) -> list[str]:
    """Per family (one SD row's gains, or one network's gains over cosine), its k comparisons:
    what chance alone does to k intervals, and the correction."""
    lines = []
    for family in dict.fromkeys(map(family_of, gains)):
        first = next(g for g in gains if family_of(g) == family)
        k, model = first.family_size, md(first.sd.model)
        who = f"every method vs cosine ({model})" if first.role == FAMILY else (
            f"{md(first.sd.label)} ({model})")  # fmt: skip
        head = f"- {who}: **{k} comparison{'s' if k > 1 else ''}**"
        if not any(g.diff.ci95 for g in gains if family_of(g) == family):
            lines.append(f"{head}, none with an interval (each note says why): nothing to correct.")
            continue
        lines.append(
            f"{head}. At 95 % each, when no method differs, at least one interval excludes 0 "
            f"with probability up to 1 - 0.95^{k} = {1.0 - stats.LEVEL**k:.0%}; the "
            f"*simultaneous* intervals hold for all {k} together (Bonferroni: each at "
            f"{stats.bonferroni_level(k):.2%})."
        )
    return lines


def _lines(gains: Sequence[Gain], with_simultaneous: bool) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "model", "row", "baseline", "comparison", "gain ± SE", "df",
              "95 % interval", "simultaneous interval (k)", "pairing", "n row / baseline",
              "top-1 row / baseline (these runs)", "note"]  # fmt: skip
    lines = []
    for g in gains:
        d = g.diff
        joint = Markup(f"{interval(g.simultaneous)} (k={g.family_size})") if g.simultaneous else "-"
        lines.append([g.sd.dataset, g.sd.model, g.sd.label, g.baseline.label, g.comparison,
                      num(d.gain) + ("" if d.se is None else f" ± {num(d.se)}"),
                      num(d.df, 1), interval(d.ci95), joint, d.pairing, f"{d.n_a} / {d.n_b}",
                      f"{num(d.mean_a)} / {num(d.mean_b)}", _gain_note(g)])  # fmt: skip
    if not with_simultaneous:
        header, lines = _drop(header, lines, {"comparison", "simultaneous interval (k)"})
    return header, lines


def _drop(header: list[str], lines: list[list[str]], names: set[str]) -> tuple[list, list]:
    keep = [i for i, h in enumerate(header) if h not in names]
    return [header[i] for i in keep], [[line[i] for i in keep] for line in lines]


def _body(gains: Sequence[Gain], joint: bool) -> list[str]:
    """The table of `gains` and what their intervals say (with `joint`: k and simultaneous)."""
    header, lines = _lines(gains, joint)
    out = ["", *_multiplicity(gains), ""] if joint else [""]
    out += [*table(header, lines), "", verdict(gains)]
    if joint and any(g.simultaneous for g in gains):
        out += ["", verdict(gains, simultaneous=True)]
    return out


def gains(report: Report) -> list[str]:
    primary = [g for g in report.gains if g.role == "primary"]
    exploratory = [g for g in report.gains if g.role == "exploratory"]
    out: list[str] = []
    if report.gains:
        out += ["", "## SD gain over each baseline", "", GAINS_INTRO]
        out += _body(primary, joint=True) if primary else []
        if report.primary_notes:
            out += ["", "Which SD row is the headline (chosen by its recipe, not its result):"]
            out += [f"- {md(note)}" for note in report.primary_notes]
    if exploratory:
        out += ["", "### Exploratory: the other SD rows", "", EXPLORATORY_INTRO]
        out += _body(exploratory, joint=False)
    if report.family_gains:
        out += ["", "## Each self-distillation method's gain over cosine (the CE baseline)", ""]
        out += [FAMILY_INTRO, *_body(report.family_gains, joint=True)]
    return out


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
