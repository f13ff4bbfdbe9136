"""`sdrun-report PATH...`: results tables and plots from run and sweep directories.

Every directory under PATH holding `.hydra/config.yaml` is a run. Runs are grouped into rows
by what they computed (identity.py: the settings their method reads, how they ran, and a
student's teacher), and each row shows its final-epoch top-1 error as mean ± standard error
with a t-based 95 % interval over its seeds (stats.py). A run without a complete summary
(killed, still running, half-written, malformed), or a student of such a teacher, is listed
with the reason and never averaged; a diverged run is counted in its row. The trials of a
hyperparameter search are in their search's section only (search.py), never in a row or gain.

The method of a run is read from its config, not from its name: distill=sd -> `sd`;
distill=none with schedule sd/cosine/step -> `cyclic`/`cosine`/`step`; distill=kd ->
`born-again-g<k>`, k being one more than its teacher run's generation (a run from scratch is
generation 1), or `kd` when the teacher is a file outside any run directory.

Writes into `PATH/report/` (or `--out`: a new or empty folder, or one sdrun-report made;
output.py) RESULTS.md, results.csv, gains.csv and PNG plots, reading nothing outside the
PATHs and `--with` folders (scope.py, walk.py): per sweep (heatmap of the final error over the
two swept values), per dataset (methods side by side per network) and, with `--run-plots`, per
run (accuracy and LR against epochs, cycle ends marked); transfer runs get their own table
(transfer.py, transfer_write.py).
"""

from sdrun.report.cli import main
from sdrun.report.gains import Gain, NotCompared, gain_record, sd_gains
from sdrun.report.model import Report
from sdrun.report.output import ReportFolderRefused
from sdrun.report.plots import methods_figure, plot_methods, plot_run, plot_sweep
from sdrun.report.runs import Run, load_run, method_of
from sdrun.report.scan import load_runs
from sdrun.report.sweeps import Sweep, build_sweep
from sdrun.report.table import Row, build_rows, row_record
from sdrun.report.teachers import link_teachers
from sdrun.report.walk import find_dirs
from sdrun.report.write import build_report, write, write_report

__all__ = [
    "Gain",
    "NotCompared",
    "Report",
    "ReportFolderRefused",
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
    "methods_figure",
    "plot_methods",
    "plot_run",
    "plot_sweep",
    "row_record",
    "sd_gains",
    "write",
    "write_report",
]
