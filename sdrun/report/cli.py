"""The `sdrun-report` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from sdrun.errors import SdrunError
from sdrun.report.escape import printable
from sdrun.report.output import open_out
from sdrun.report.run_files import CONFIG
from sdrun.report.write import build_report, write


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sdrun-report",
        description="Tables and plots from sdrun run and sweep directories.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs, sweep dirs or any parent")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder: new, empty, or one sdrun-report made (default: <first PATH>/report)",
    )
    parser.add_argument(
        "--with",
        dest="context",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="also read the runs under PATH, only to identify the teachers and backbones of "
        "the runs reported (they get no rows); the report reads nothing outside the PATHs",
    )
    parser.add_argument(
        "--run-plots",
        action="store_true",
        help="draw each run's curves into <out>/runs/ (one PNG per run: slow for hundreds of "
        "runs; without it, RESULTS.md links the curves.png sdrun wrote into each run folder)",
    )
    args = parser.parse_args(argv)
    missing = [p for p in (*args.paths, *args.context) if not p.is_dir()]
    if missing:
        print(f"sdrun-report: error: {missing[0]} is not a directory", file=sys.stderr)
        return 2
    # The user's --out is theirs to place (through a link too); the default lies inside a
    # folder that may come from someone else, and output.open_out checks it.
    out = args.out.resolve() if args.out else args.paths[0].resolve() / "report"
    try:
        folder = open_out(out)  # before reading anything: a refused folder is refused at once
        report = build_report(args.paths, out, args.run_plots, args.context)
        if not report.runs and not report.transfer_runs:
            where = ", ".join(map(str, args.paths))
            print(
                f"sdrun-report: error: no run directories under {where} (a run directory "
                f"holds {CONFIG}); point it at outputs/, a run or a sweep directory",
                file=sys.stderr,
            )
            return 1
        write(report, folder)
    except (SdrunError, OSError) as err:  # OSError: a disk full, a folder not writable
        print(f"sdrun-report: error: {printable(str(err))}", file=sys.stderr)
        return 2
    _say(report, out)
    return 0


def _say(report, out: Path) -> None:
    """What was left out and why (stderr), and where the report is (stdout): one line each."""
    for run in report.incomplete:
        _note(f"not averaged: {run.path}: {run.reason}")
    for run in (r for row in report.rows for r in row.diverged):
        _note(f"{run.path}: {run.reason}")
    for note in report.notes:
        _note(note)
    n_runs = sum(r.n for r in report.rows)
    print(
        f"sdrun-report: {n_runs} complete runs in {len(report.rows)} rows -> {out / 'RESULTS.md'}"
    )
    if report.transfer_runs:
        print(f"sdrun-report: {len(report.transfer_runs)} transfer runs -> {out / 'transfer.csv'}")


def _note(text: str) -> None:
    # one line each: a reason can quote a value from a folder, newlines and escapes included
    print(f"sdrun-report: {printable(text)}", file=sys.stderr)
