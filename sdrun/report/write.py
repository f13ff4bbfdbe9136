"""Assembling the report and writing it: RESULTS.md, results.csv, gains.csv and the plots."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdrun.report.plots import plot_methods, plot_run, plot_sweep
from sdrun.report.runs import Run, load_runs
from sdrun.report.search import SEARCH_COLUMNS, find_searches, search_markdown, trial_record
from sdrun.report.table import (
    GAIN_COLUMNS,
    RESULT_COLUMNS,
    Gain,
    Row,
    Sweep,
    _fmt_value,
    _mean,
    _sort_key,
    _std,
    build_rows,
    build_sweep,
    gain_record,
    row_record,
    sd_gains,
)

MAX_NAME = 120  # characters of a plot's file name
TABLE_HEADER = [
    "model", "method", "seeds", "top-1 err", "best-epoch err (test-selected)",
    "val-selected epoch err", "teacher err", "ensemble err", "wall h", "GPU h",
    "wall h with teachers", "published err",
]  # fmt: skip


@dataclass
class Report:
    roots: list[Path]
    out: Path
    runs: list[Run]  # every run found, complete or not
    rows: list[Row]
    gains: list[Gain]
    sweeps: list[Sweep]
    incomplete: list[Run]
    notes: list[str]  # folders that are not runs, duplicate seeds
    run_plots: dict[Path, Path] = field(default_factory=dict)
    method_plots: dict[str, Path] = field(default_factory=dict)
    sweep_plots: dict[Path, Path] = field(default_factory=dict)

    def link(self, path: Path) -> str:
        """`path` relative to RESULTS.md, so the report folder can be moved as a whole."""
        return os.path.relpath(path, self.out)


def slug(path: Path, roots: Sequence[Path]) -> str:
    """A file name for `path`, from its place under the scanned root that holds it."""
    name = path.name
    for root in roots:
        if path.is_relative_to(root):
            # The root's own name first: two roots can hold runs with the same relative path.
            name = "__".join((root.name, *path.relative_to(root).parts))
            break
    if len(name) > MAX_NAME:  # Hydra's sweep subdirs can be long; file names have a limit
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME - 11]}_{digest}"
    return name


def build_report(paths: Sequence[Path], out: Path) -> Report:
    roots = [p.resolve() for p in paths]
    runs, sweep_dirs, notes = load_runs(roots)
    rows = build_rows(r for r in runs if r.complete)
    notes += [note for row in rows for note in row.notes]
    return Report(
        roots=roots,
        out=out,
        rows=rows,
        gains=sd_gains(rows),
        sweeps=[build_sweep(p, runs) for p in sweep_dirs],
        incomplete=[r for r in runs if not r.complete],
        notes=notes,
        runs=runs,
    )


def draw_plots(report: Report) -> None:
    for folder in (report.out / "runs", report.out / "sweeps"):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):  # plots of runs that are gone would mislead
            stale.unlink()
    for run in report.runs:
        target = report.out / "runs" / f"{slug(run.path, report.roots)}.png"
        if plot_run(run, target):
            report.run_plots[run.path] = target
    for dataset in dict.fromkeys(r.dataset for r in report.rows):
        target = report.out / f"methods_{dataset}.png"
        plot_methods([r for r in report.rows if r.dataset == dataset], target)
        report.method_plots[dataset] = target
    for sweep in report.sweeps:
        target = report.out / "sweeps" / f"{slug(sweep.path, report.roots)}.png"
        if plot_sweep(sweep, target):
            report.sweep_plots[sweep.path] = target


def write_report(paths: Sequence[Path], out: Path) -> Report:
    """Scan `paths` and write RESULTS.md, results.csv, gains.csv and the plots into `out`."""
    report = build_report(paths, out)
    write(report)
    return report


def write(report: Report) -> None:
    out = report.out
    out.mkdir(parents=True, exist_ok=True)
    draw_plots(report)
    write_csv(out / "results.csv", [row_record(r) for r in report.rows], RESULT_COLUMNS)
    write_csv(out / "gains.csv", [gain_record(g) for g in report.gains], GAIN_COLUMNS)
    searches = find_searches(report.runs)
    if searches:
        trials = [trial_record(s, run) for s in searches for run in s.trials]
        write_csv(out / "searches.csv", trials, SEARCH_COLUMNS)
    md = [*_md_intro(report), *_md_tables(report), *_md_gains(report), *_md_sweeps(report)]
    md += [*search_markdown(searches, report.link), *_md_runs(report), *_md_problems(report)]
    (out / "RESULTS.md").write_text("\n".join(md) + "\n")


def write_csv(path: Path, records: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for record in records:
            writer.writerow({k: _csv_value(v) for k, v in record.items()})


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return round(value, 4) if isinstance(value, float) else value


def _num(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _sig(value: Optional[float]) -> str:
    """Three significant digits: hours range from a smoke run's 0.0003 to a chain's 30."""
    return "-" if value is None else f"{value:.3g}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = _std(values)
    return _num(_mean(values)) + ("" if std is None else f" ± {_num(std)}")


def _published(row: Row) -> str:
    ref = row.reference
    if ref is None:
        return "-"
    low, high = 100.0 - ref[1], 100.0 - ref[0]
    value = f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"
    return f"{value} ({ref[2]})"


def _md_table(header: Sequence[str], lines: list[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return out


def _md_intro(report: Report) -> list[str]:
    roots = ", ".join(f"`{p}`" for p in report.roots)
    n_runs = sum(len(r.runs) for r in report.rows)
    return [
        "# Results",
        "",
        f"From {roots}: {n_runs} complete runs in {len(report.rows)} rows; "
        f"{len(report.incomplete)} incomplete (listed at the end, not averaged).",
        "",
        "Top-1 **error** (%) on the test set at the **final epoch**, mean ± std over seeds "
        "(std from 2 seeds on). *Best epoch* is the lowest error of any epoch, **selected on "
        "the test set**: optimistic, shown only to compare with papers that report it. "
        "*Val-selected epoch*: the test error at the epoch with the best accuracy on the "
        "validation split (runs with `dataset.val_split`): a selection that never saw the "
        "test set. "
        "*Teacher*: the final snapshot teacher. *Ensemble*: the average softmax of the "
        "cycle-end snapshots. Hours are per run; *with teachers* adds the runs that trained "
        "the teacher chain (born-again): the real cost of a multi-generation result.",
    ]


def _md_tables(report: Report) -> list[str]:
    md: list[str] = []
    for dataset in dict.fromkeys(r.dataset for r in report.rows):
        lines = [_md_row(row) for row in report.rows if row.dataset == dataset]
        md += ["", f"## {dataset}", "", *_md_table(TABLE_HEADER, lines)]
        if dataset in report.method_plots:
            md += ["", f"![methods per network]({report.link(report.method_plots[dataset])})"]
    return md


def _md_row(row: Row) -> list[str]:
    rec = row_record(row)
    return [
        row.model, row.label, str(len(row.runs)), _mean_std(row.errors()),
        _num(rec["best_epoch_err_mean_test_selected"]), _num(rec["val_selected_err_mean"]),
        _num(rec["teacher_err_mean"]),
        _num(rec["ensemble_err_mean"]), _sig(rec["wall_h_mean"]), _sig(rec["gpu_h_mean"]),
        _sig(rec["wall_h_with_teachers_mean"]), _published(row),
    ]  # fmt: skip


def _md_gains(report: Report) -> list[str]:
    if not report.gains:
        return []
    lines = [
        [g.sd.dataset, g.sd.model, g.sd.label, g.baseline.label,
         _num(g.mean) + ("" if g.spread is None else f" ± {_num(g.spread)}"),
         str(g.pairs) if g.pairs else "unpaired"]
        for g in report.gains
    ]  # fmt: skip
    return [
        "",
        "## SD gain over each baseline",
        "",
        "Top-1 points SD is better by (= error points it removes): mean ± std of the per-seed "
        "differences over the seeds both rows have (same seed: same initial weights and "
        "data order), else the difference of the means ± its standard error. Only rows with "
        "the same dataset, network, epochs, batch and optimizer are compared.",
        "",
        *_md_table(["dataset", "model", "SD", "baseline", "gain", "paired seeds"], lines),
    ]


def _md_sweeps(report: Report) -> list[str]:
    md: list[str] = []
    for sweep in report.sweeps:
        md += ["", f"## Sweep `{sweep.path}`", ""]
        if sweep.path in report.sweep_plots:
            md += [f"![heatmap]({report.link(report.sweep_plots[sweep.path])})", ""]
        else:
            md += [
                f"(no heatmap: it needs 2 swept numeric values, this sweep has {sweep.axes})",
                "",
            ]
        cells = sorted(sweep.cells().items(), key=lambda kv: [_sort_key(v) for v in kv[0]])
        lines = [[*map(_fmt_value, k), _mean_std(v), str(len(v))] for k, v in cells]
        md += _md_table([*sweep.axes, "final top-1 (%)", "seeds"], lines)
    return md


def _md_runs(report: Report) -> list[str]:
    """One line per run: what it is, its curves, where it lives."""
    if not report.run_plots:
        return []
    md = ["", "## Runs", ""]
    for run in sorted(report.runs, key=lambda r: str(r.path)):
        if run.path in report.run_plots:
            state = "" if run.complete else " (incomplete)"
            md.append(
                f"- {run.dataset} {run.model} {run.method} seed {run.seed}{state}: "
                f"[curves]({report.link(report.run_plots[run.path])}), `{report.link(run.path)}`"
            )
    return md


def _md_problems(report: Report) -> list[str]:
    problems = [f"- `{r.path}`: {r.problem}" for r in report.incomplete]
    problems += [f"- {note}" for note in report.notes]
    if not problems:
        return []
    return ["", "## Incomplete or unreadable runs (not averaged)", "", *problems]
