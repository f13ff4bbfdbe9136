"""The run's final plots for wandb: accuracy and LR against epochs with the cycle ends marked,
drawn by sdrun-report's `plot_run` into the run directory (`curves.png`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sdrun.config import flatten
from sdrun.runfolder.loggers import METRICS, read_metrics
from sdrun.runfolder.run_names import method_of

log = logging.getLogger(__name__)

CURVES = "curves.png"


def final_plots(run_dir: Path, config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Path]:
    """{wandb key: PNG} of the finished run; empty (with a warning) if drawing fails."""
    try:  # imported here: matplotlib is only needed when a logger wants the plots
        from sdrun.report.plots import plot_run
        from sdrun.report.runs import Run

        flat = flatten(config)
        run = Run(run_dir, flat, summary, read_metrics(run_dir / METRICS))
        run.method = method_of(str(flat.get("distill.name")), str(flat.get("schedule.name")))
        target = run_dir / CURVES
        return {"plots/curves": target} if plot_run(run, target) else {}
    except Exception as err:  # noqa: BLE001 - a plot is not worth stopping a finished run for
        log.warning("could not draw the run's plots (%s: %s)", type(err).__name__, err)
        return {}
