"""Assembling the report and writing it: RESULTS.md, results.csv, gains.csv and the plots, into
a report folder sdrun-report may write (output.py)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from sdrun.report.gains import FAMILY, GAIN_COLUMNS, gain_record, sd_gains
from sdrun.report.latex import results_tex
from sdrun.report.markdown import results_md
from sdrun.report.model import Report
from sdrun.report.output import OutFolder, open_out, safe_name
from sdrun.report.plots import methods_figure, run_figure, sweep_figure
from sdrun.report.run_files import curves_of
from sdrun.report.runs import Run
from sdrun.report.scan import scan
from sdrun.report.search import SEARCH_COLUMNS, Search, find_searches, search_markdown, trial_record
from sdrun.report.sweep_record import SweepRecords
from sdrun.report.sweeps import build_sweep
from sdrun.report.table import RESULT_COLUMNS, build_rows, row_record
from sdrun.report.transfer import split_runs
from sdrun.report.transfer_write import transfer_section


def slug(path: Path, roots: Sequence[Path]) -> str:
    """A file name for `path`, from its place under the scanned root that holds it (made safe:
    output.safe_name)."""
    name = path.name
    for root in roots:
        if path.is_relative_to(root):
            # The root's own name first: two roots can hold runs with the same relative path.
            name = "__".join((root.name, *path.relative_to(root).parts))
            break
    return safe_name(name)


def build_report(
    paths: Sequence[Path], out: Path, run_plots: bool = False, context: Sequence[Path] = ()
) -> Report:
    """Read every run under `paths`, and under `context` the runs that taught or were
    fine-tuned by them (nothing else; the folder `out` is not read)."""
    roots = [Path(p).resolve() for p in paths]
    found = scan(paths, skip={Path(os.path.abspath(out))}, context=context)
    runs, transfer_runs = split_runs(found.runs)
    records = SweepRecords(roots)
    searches = find_searches(runs, records)
    results = without_trials(runs, searches)
    rows = build_rows(results)
    search_dirs = {s.path for s in searches}
    compared = sd_gains(rows, [*found.sweeps, *search_dirs])
    sweeps = [build_sweep(p, rows, records) for p in found.sweeps if p not in search_dirs]
    notes = [*found.notes, *records.notes, *(note for row in rows for note in row.notes)]
    gains = [g for g in compared.gains if g.role != FAMILY]
    return Report(
        roots=roots,
        out=Path(os.path.abspath(out)),
        rows=rows,
        gains=gains,
        family_gains=[g for g in compared.gains if g.role == FAMILY],
        not_compared=compared.not_compared,
        primary_notes=compared.notes,
        sweeps=[s for s in sweeps if s.cells_list],
        incomplete=[r for r in results if not r.complete and not r.diverged],
        notes=notes,
        runs=runs,
        transfer_runs=transfer_runs,
        searches=searches,
        draw_run_plots=run_plots,
        scope=found.scope,
    )


def without_trials(runs: Sequence[Run], searches: Sequence[Search]) -> list[Run]:
    """The runs that are not trials of a search. A trial is picked by its validation score
    among many: its test number is a selected one, and the trials are not seeds of one
    setting. They belong in their search's section, never in a row or a gain."""
    trials = {run.path for search in searches for run in search.trials}
    return [run for run in runs if run.path not in trials]


def draw_plots(report: Report, folder: OutFolder) -> None:
    for run in report.runs:
        if not report.draw_run_plots:
            # the curves sdrun drew into the run folder when it finished, if it did
            curves = curves_of(run.path)
            if curves is not None:
                report.run_plots[run.path] = curves
            continue
        name = f"runs/{slug(run.path, report.roots)}.png"
        fig = run_figure(run)
        if fig is not None:
            report.run_plots[run.path] = folder.save_figure(name, fig)
    for dataset in dict.fromkeys(r.dataset for r in report.rows if r.runs):
        fig = methods_figure([r for r in report.rows if r.dataset == dataset and r.runs])
        report.method_plots[dataset] = folder.save_figure(f"methods_{safe_name(dataset)}.png", fig)
    for sweep in report.sweeps:
        fig = sweep_figure(sweep)
        if fig is not None:
            name = f"sweeps/{slug(sweep.path, report.roots)}.png"
            report.sweep_plots[sweep.path] = folder.save_figure(name, fig)


def write_report(
    paths: Sequence[Path], out: Path, run_plots: bool = False, context: Sequence[Path] = ()
) -> Report:
    """Scan `paths` and write RESULTS.md, results.csv, gains.csv and the plots into `out`
    (a plot per run too with `run_plots`; `context`: see build_report). Raises
    ReportFolderRefused, before reading anything, when `out` is not a folder sdrun-report
    may write into."""
    folder = open_out(out)
    report = build_report(paths, out, run_plots, context)
    write(report, folder)
    return report


def write(report: Report, folder: Optional[OutFolder] = None) -> None:
    """Write `report` into its folder (checked now when `folder` is not given)."""
    folder = folder or open_out(report.out)
    report.folder = folder
    draw_plots(report, folder)
    folder.write_csv("results.csv", [row_record(r) for r in report.rows], RESULT_COLUMNS)
    if report.rows:
        folder.write_text("results.tex", results_tex(report.rows))
    gains = [*report.gains, *report.family_gains]
    folder.write_csv("gains.csv", [gain_record(g) for g in gains], GAIN_COLUMNS)
    searches = report.searches
    if searches:
        trials = [trial_record(s, run) for s in searches for run in s.trials]
        folder.write_csv("searches.csv", trials, SEARCH_COLUMNS)
    md = [*results_md(report), *search_markdown(searches, report.link)]
    md += transfer_section(report)
    folder.write_text("RESULTS.md", "\n".join(md) + "\n")
    folder.finish()
