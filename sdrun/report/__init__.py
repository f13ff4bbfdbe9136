"""`sdrun-report PATH...`: results tables and plots from run and sweep directories.

Every directory under PATH holding `.hydra/config.yaml` is a run. Complete runs (a
`summary.json` that says `complete: true`) are grouped by what they computed - dataset,
model, method and every other run-defining config value except the seed - and each group
becomes one row: final-epoch top-1 error as mean +- std over its seeds. A run without a
complete summary (killed, still running, half-written) is listed as incomplete, never averaged.

The method of a run is read from its config, not from its name: distill=sd -> `sd`;
distill=none with schedule sd/cosine/step -> `cyclic`/`cosine`/`step`; distill=kd ->
`born-again-g<k>`, k being one more than its teacher run's generation (a run from scratch is
generation 1), or `kd` when the teacher run cannot be found.

Writes into `PATH/report/` (or `--out`): RESULTS.md, results.csv, gains.csv and PNG plots:
per run (accuracy and LR against epochs, cycle ends marked), per sweep (heatmap of final
accuracy over the two swept values) and per dataset (methods side by side per network).
"""

from sdrun.report.cli import main
from sdrun.report.plots import plot_methods, plot_run, plot_sweep
from sdrun.report.runs import Run, find_dirs, link_teachers, load_run, load_runs, method_of
from sdrun.report.table import (
    Gain,
    Row,
    Sweep,
    build_rows,
    build_sweep,
    gain_record,
    recipe_of,
    row_record,
    sd_gains,
)
from sdrun.report.table import (
    _gain as _gain,  # the gain arithmetic, which tests call directly
)
from sdrun.report.write import Report, build_report, write, write_csv, write_report

__all__ = [
    "Gain",
    "Report",
    "Row",
    "Run",
    "Sweep",
    "build_report",
    "build_rows",
    "build_sweep",
    "find_dirs",
    "gain_record",
    "link_teachers",
    "load_run",
    "load_runs",
    "main",
    "method_of",
    "plot_methods",
    "plot_run",
    "plot_sweep",
    "recipe_of",
    "row_record",
    "sd_gains",
    "write",
    "write_csv",
    "write_report",
]
