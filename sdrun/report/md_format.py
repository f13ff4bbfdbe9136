"""Markdown pieces every section of RESULTS.md uses: numbers, `mean ± SE [interval]`, tables
(every cell escaped unless the report composed it: escape.py) and links to files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from sdrun.report import stats
from sdrun.report.escape import Markup, md
from sdrun.report.stats import EVERY_VALUE_EQUAL


def num(value: Optional[float], digits: int = 2) -> str:
    """A number cell: `digits` decimals, "-" when missing (or not a number: a value read from
    a folder, such as a search's best value, can be anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}f}"


def sig3(value: Optional[float]) -> str:
    """Three significant digits: hours range from a smoke run's 0.0003 to a chain's 30."""
    return "-" if value is None else f"{value:.3g}"


PERCENT = (0.0, 100.0)  # an error rate, mAP or mIoU cannot leave these


def interval(
    ci: Optional[tuple[float, float]], bounds: Optional[tuple[float, float]] = None
) -> Markup:
    """`[low, high]`; an end past `bounds` is clipped to it, and the cell says so (a t
    interval of 3 seeds can reach past 100 % error, which no run can)."""
    if ci is None:
        return Markup("-")
    low, high = ci
    clipped = []
    if bounds is not None and low < bounds[0]:
        low, clipped = bounds[0], [*clipped, f"{bounds[0]:g}"]
    if bounds is not None and high > bounds[1]:
        high, clipped = bounds[1], [*clipped, f"{bounds[1]:g}"]
    note = f" (clipped at {' and '.join(clipped)} %)" if clipped else ""
    return Markup(f"[{num(low)}, {num(high)}]{note}")


def mean_se(
    values: Sequence[float],
    with_interval: bool = False,
    bounds: Optional[tuple[float, float]] = PERCENT,
) -> Markup:
    """`mean ± SE` (and `[low, high]`, clipped to `bounds`); the mean alone for one value."""
    if not values:
        return Markup("-")
    se = stats.standard_error(values)
    text = num(stats.mean(values)) + ("" if se is None else f" ± {num(se)}")
    ci = stats.mean_interval(values) if with_interval else None
    if with_interval and ci is None and stats.all_equal(values) and len(values) > 1:
        return Markup(f"{text} [{EVERY_VALUE_EQUAL}]")
    return Markup(text + ("" if ci is None else f" {interval(ci, bounds)}"))


def table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table: every cell escaped (escape.md) but those the report composed
    (escape.Markup), so no value from a folder can end a cell or the table."""
    out = ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(md(cell) for cell in line) + " |" for line in lines]
    return out


def link(target: Path, out: Path) -> str:
    """`target` relative to the report folder `out` as a Markdown link destination: every
    character but letters, digits and `/._-~` percent-encoded (a folder's name may hold `)`,
    spaces or newlines, which would end the link)."""
    return quote(os.path.relpath(target, out), safe="/._-~")
