"""The `sdrun-report PATH...` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from sdrun.report.runs import CONFIG
from sdrun.report.write import build_report, write


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sdrun-report",
        description="Tables and plots from sdrun run and sweep directories.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs, sweep dirs or any parent")
    parser.add_argument("--out", type=Path, help="output folder (default: <first PATH>/report)")
    parser.add_argument(
        "--run-plots",
        action="store_true",
        help="draw each run's curves into <out>/runs/ (one PNG per run: slow for hundreds of "
        "runs; without it, RESULTS.md links the curves.png sdrun wrote into each run folder)",
    )
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not p.is_dir()]
    if missing:
        print(f"sdrun-report: error: {missing[0]} is not a directory", file=sys.stderr)
        return 2
    out = args.out or args.paths[0] / "report"
    report = build_report(args.paths, out, run_plots=args.run_plots)
    if not report.runs and not report.transfer_runs:
        where = ", ".join(map(str, args.paths))
        print(
            f"sdrun-report: error: no run directories under {where} (a run directory holds "
            f"{CONFIG}); point it at outputs/, a run or a sweep directory",
            file=sys.stderr,
        )
        return 1
    write(report)
    for run in report.incomplete:
        print(f"sdrun-report: not averaged: {run.path}: {run.reason}", file=sys.stderr)
    for run in (r for row in report.rows for r in row.diverged):
        print(f"sdrun-report: {run.path}: {run.reason}", file=sys.stderr)
    for note in report.notes:
        print(f"sdrun-report: {note}", file=sys.stderr)
    n_runs = sum(r.n for r in report.rows)
    print(
        f"sdrun-report: {n_runs} complete runs in {len(report.rows)} rows -> {out / 'RESULTS.md'}"
    )
    if report.transfer_runs:
        print(f"sdrun-report: {len(report.transfer_runs)} transfer runs -> {out / 'transfer.csv'}")
    return 0
