"""Assembling the report and writing it: RESULTS.md, results.csv, gains.csv and the plots."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdrun.report.gains import GAIN_COLUMNS, Gain, NotCompared, gain_record, sd_gains
from sdrun.report.markdown import results_md
from sdrun.report.plots import plot_methods, plot_run, plot_sweep
from sdrun.report.runs import Run, load_runs
from sdrun.report.search import (
    SEARCH_COLUMNS,
    Search,
    find_searches,
    search_markdown,
    trial_record,
)
from sdrun.report.sweeps import Sweep, build_sweep
from sdrun.report.table import RESULT_COLUMNS, Row, build_rows, row_record
from sdrun.report.transfer import split_runs
from sdrun.report.transfer_write import transfer_section
from sdrun.runfolder.run_plots import CURVES

MAX_NAME = 120  # characters of a plot's file name


@dataclass
class Report:
    roots: list[Path]
    out: Path
    runs: list[Run]  # every run found, complete or not
    rows: list[Row]
    gains: list[Gain]
    not_compared: list[NotCompared]
    sweeps: list[Sweep]
    incomplete: list[Run]  # neither complete nor counted as diverged: not in any row
    notes: list[str]  # folders that are not runs, duplicate seeds
    run_plots: dict[Path, Path] = field(default_factory=dict)
    method_plots: dict[str, Path] = field(default_factory=dict)
    sweep_plots: dict[Path, Path] = field(default_factory=dict)
    transfer_runs: list[Run] = field(default_factory=list)  # sdrun-transfer's, own table
    searches: list[Search] = field(default_factory=list)  # their trials are in no row
    draw_run_plots: bool = False  # one PNG per run: most of a large report's time

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


def build_report(paths: Sequence[Path], out: Path, run_plots: bool = False) -> Report:
    roots = [p.resolve() for p in paths]
    runs, sweep_dirs, notes = load_runs(roots)
    runs, transfer_runs = split_runs(runs)
    searches = find_searches(runs)
    results = without_trials(runs, searches)
    rows = build_rows(results)
    notes += [note for row in rows for note in row.notes]
    gains, not_compared = sd_gains(rows)
    search_dirs = {s.path for s in searches}
    sweeps = [build_sweep(p, rows) for p in sweep_dirs if p not in search_dirs]
    return Report(
        roots=roots,
        out=out,
        rows=rows,
        gains=gains,
        not_compared=not_compared,
        sweeps=[s for s in sweeps if s.cells_list],
        incomplete=[r for r in results if not r.complete and not r.diverged],
        notes=notes,
        runs=runs,
        transfer_runs=transfer_runs,
        searches=searches,
        draw_run_plots=run_plots,
    )


def without_trials(runs: Sequence[Run], searches: Sequence[Search]) -> list[Run]:
    """The runs that are not trials of a search. A trial is picked by its validation score
    among many: its test number is a selected one, and the trials are not seeds of one
    setting. They belong in their search's section, never in a row or a gain."""
    trials = {run.path for search in searches for run in search.trials}
    return [run for run in runs if run.path not in trials]


def draw_plots(report: Report) -> None:
    for folder in (report.out / "runs", report.out / "sweeps"):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):  # plots of runs that are gone would mislead
            stale.unlink()
    for run in report.runs:
        if not report.draw_run_plots:
            # the curves sdrun drew into the run folder when it finished, if it did
            if (run.path / CURVES).is_file():
                report.run_plots[run.path] = run.path / CURVES
            continue
        target = report.out / "runs" / f"{slug(run.path, report.roots)}.png"
        if plot_run(run, target):
            report.run_plots[run.path] = target
    for dataset in dict.fromkeys(r.dataset for r in report.rows if r.runs):
        target = report.out / f"methods_{dataset}.png"
        plot_methods([r for r in report.rows if r.dataset == dataset], target)
        report.method_plots[dataset] = target
    for sweep in report.sweeps:
        target = report.out / "sweeps" / f"{slug(sweep.path, report.roots)}.png"
        if plot_sweep(sweep, target):
            report.sweep_plots[sweep.path] = target


def write_report(paths: Sequence[Path], out: Path, run_plots: bool = False) -> Report:
    """Scan `paths` and write RESULTS.md, results.csv, gains.csv and the plots into `out`
    (a plot per run too with `run_plots`)."""
    report = build_report(paths, out, run_plots)
    write(report)
    return report


def write(report: Report) -> None:
    out = report.out
    out.mkdir(parents=True, exist_ok=True)
    draw_plots(report)
    write_csv(out / "results.csv", [row_record(r) for r in report.rows], RESULT_COLUMNS)
    write_csv(out / "gains.csv", [gain_record(g) for g in report.gains], GAIN_COLUMNS)
    searches = report.searches
    if searches:
        trials = [trial_record(s, run) for s in searches for run in s.trials]
        write_csv(out / "searches.csv", trials, SEARCH_COLUMNS)
    md = [*results_md(report), *search_markdown(searches, report.link)]
    md += transfer_section(report.transfer_runs, out)
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
