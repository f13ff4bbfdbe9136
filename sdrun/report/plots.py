"""The report's plots, drawn with matplotlib's object-oriented API (no pyplot state): a run's
curves, the methods of a dataset side by side per network, and a sweep's heatmap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sdrun.report.escape import printable
from sdrun.report.runs import Run, run_metrics
from sdrun.report.stats import standard_error
from sdrun.report.style import fill_of, style_of
from sdrun.report.sweeps import Sweep
from sdrun.report.table import Row, _is_number, _mean, _model_order, _sort_key
from sdrun.trust import files


def _figure(width: float = 7.0, height: float = 4.0):
    # The object-oriented API with the Agg canvas: no display, no global pyplot state.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: Path) -> bool:
    """Save `fig` into `path` through the trust boundary; False when there is none (None)."""
    if fig is None:
        return False
    files.save_figure(fig, path)
    return True


def plot_run(run: Run, path: Path) -> bool:
    """Draw `run_figure` into `path`; False when the run has no finished epoch."""
    return _save(run_figure(run), path)


def run_figure(run: Run):
    """Student and teacher test accuracy (and the student's validation accuracy when the run
    holds out a split) and the LR against epochs, cycle ends dashed; None without epochs."""
    from matplotlib.ticker import MaxNLocator

    records = [r for r in run_metrics(run) if _is_number(r.get("epoch"))]
    if not records:
        return None
    epochs = [r["epoch"] for r in records]
    fig = _figure()
    ax = fig.subplots()
    student = [_nan(r.get("student/top1")) for r in records]
    ax.plot(epochs, student, marker=".", ms=3, lw=1.6, label="student top-1 (test)")
    val = [_nan(r.get("val/top1")) for r in records]
    if not all(math.isnan(v) for v in val):  # what a selection on the split would look at
        ax.plot(epochs, val, marker=".", ms=3, lw=1.2, ls=":", label="student top-1 (val split)")
    teacher = [_nan(r.get("teacher/top1")) for r in records]
    if not all(math.isnan(v) for v in teacher):
        ax.plot(epochs, teacher, marker=".", ms=3, lw=1.2, drawstyle="steps-post",
                label="teacher top-1 (frozen snapshot)")  # fmt: skip
    for i, end in enumerate(_cycle_ends(records)):
        ax.axvline(end, color="grey", ls="--", lw=0.8, label=None if i else "cycle end")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lr_ax = ax.twinx()
    lr_ax.plot(epochs, [_nan(r.get("lr")) for r in records], color="tab:red", lw=0.9, alpha=0.6)
    lr_ax.set_ylabel("LR (last iteration of the epoch)", color="tab:red")
    lr_ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    state = "  [INCOMPLETE]" if not run.complete else ""
    ax.set_title(mpl_text(f"{run.dataset} {run.model} {run.method} seed {run.seed}") + state,
                 fontsize=10)  # fmt: skip
    return fig


def _nan(value: Any) -> float:
    """None (no teacher yet, or a non-finite value written as null) plots as a gap, and so
    does anything that is not a number (a metrics line from elsewhere can hold anything)."""
    return float(value) if _is_number(value) else math.nan


def mpl_text(value: Any) -> str:
    """Folder text as matplotlib text: one line, and a `$` shown as itself (matplotlib would
    read `$...$` as math, and a malformed one stops the drawing)."""
    return printable(str(value)).replace("$", r"\$")


def _cycle_ends(records: list[dict[str, Any]]) -> list[int]:
    """Epochs after which a new cycle starts (a snapshot became the teacher)."""
    return [a["epoch"] for a, b in zip(records, records[1:]) if a.get("cycle") != b.get("cycle")]


def methods_figure(rows: list[Row]):
    """One group per network, one point per method: mean final top-1 error with its standard
    error as the error bar (none for n=1: the point is drawn hollow and labelled n=1).

    Points, not bars: a bar's length reads as its value, so a bar on an axis that does not
    start at 0 exaggerates differences (a 1.2-point gap would look like 27 %). A point can sit
    on a zoomed axis; the axis label says it does not start at 0.
    """
    models = sorted({r.model for r in rows}, key=_model_order)
    labels = list(dict.fromkeys(r.label for r in rows))
    long_labels = any(len(label) > 24 for label in labels)
    legend_rows = len(labels) if long_labels else -(-len(labels) // 4)
    fig = _figure(max(6.0, 0.45 * len(models) * len(labels) + 2.5), 4.0 + 0.2 * legend_rows)
    ax = fig.subplots()
    width = 0.8 / len(labels)
    methods = {r.label: r.method for r in rows}
    for j, label in enumerate(labels):
        color, marker = style_of(methods[label])
        same = [x for x in labels if methods[x] == methods[label]]
        look = {"color": color, "marker": marker, "fillstyle": fill_of(same.index(label))}
        for i, model in enumerate(models):
            err = next((r.errors() for r in rows if r.model == model and r.label == label), [])
            if err:
                _point(ax, i + (j - (len(labels) - 1) / 2) * width, err, look)
        ax.plot([], [], ls="", label=mpl_text(label), **look)  # one legend entry per row label
    ax.margins(y=0.25)
    ax.set_xticks(range(len(models)), [mpl_text(m) for m in models])
    bottom = ax.get_ylim()[0]
    cut = "" if bottom <= 0 else f"; axis starts at {bottom:.1f}, not 0"
    ax.set_ylabel(f"final top-1 error (%), mean ± SE{cut}", fontsize=9)
    ax.set_title(f"{mpl_text(rows[0].dataset)}: methods per network (lower is better)", fontsize=10)
    ncols = 1 if long_labels else min(4, len(labels))
    fig.legend(fontsize=8, loc="outside lower center", ncols=ncols)
    return fig


def _point(ax, x: float, err: list[float], look: dict[str, str]) -> None:
    """One row's mean error on one network, its SE as the error bar, and its n."""
    y, se = _mean(err), standard_error(err)
    if se is None:  # one run: no spread to show, and a zero-length bar would claim one
        ax.plot([x], [y], ls="", mfc="white", **look)
        ax.annotate(f"{y:.2f}\nn=1", (x, y), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)  # fmt: skip
    else:
        ax.errorbar([x], [y], yerr=[se], ls="", capsize=3, **look)
        ax.annotate(f"{y:.2f}\nn={len(err)}", (x, y + se), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=7)  # fmt: skip


def plot_methods(rows: list[Row], path: Path) -> None:
    files.save_figure(methods_figure([r for r in rows if r.runs]), path)


def plot_sweep(sweep: Sweep, path: Path) -> bool:
    """Draw `sweep_figure` into `path`; False when the sweep has no heatmap."""
    return _save(sweep_figure(sweep), path)


def sweep_figure(sweep: Sweep):
    """Heatmap of mean final top-1 error over the two swept values (rows: first key); the
    lowest error is the brightest cell. None unless two numeric values were swept."""
    if len(sweep.axes) != 2:
        return None
    cells = sweep.cells()
    ys = sorted({k[0] for k in cells}, key=_sort_key)
    xs = sorted({k[1] for k in cells}, key=_sort_key)
    if not all(_is_number(v) for v in ys + xs):
        return None
    counts = {k: len(c.runs) for k, c in cells.items()}
    grid = [[cells[(y, x)].mean if (y, x) in cells else None for x in xs] for y in ys]
    fig = _figure(max(4.8, 2.6 + 1.0 * len(xs)), max(3.6, 1.8 + 0.6 * len(ys)))
    ax = fig.subplots()
    image = ax.imshow(
        [[math.nan if v is None else v for v in line] for line in grid], cmap="viridis_r"
    )
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            value, n = grid[i][j], counts.get((y, x), 0)
            label = "n/a" if value is None else f"{value:.2f}" + (f"\nn={n}" if n > 1 else "")
            # dark text on the bright (low-error) end of viridis_r, light text on the dark end
            dark = value is not None and image.norm(value) < 0.4
            ax.text(j, i, label, ha="center", va="center", fontsize=8,
                    color="black" if dark else "white")  # fmt: skip
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(mpl_text(sweep.axes[1]))
    ax.set_ylabel(mpl_text(sweep.axes[0]))
    fig.colorbar(image, ax=ax, label="final top-1 error (%), mean over seeds")
    # the brightest cell is the best on the test set: picking it is a test-set choice
    ax.set_title(
        f"{mpl_text(sweep.path.name)}\n(test set: do not pick the best cell here)", fontsize=9
    )
    return fig
