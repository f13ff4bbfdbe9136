"""The report's plots, drawn with matplotlib's object-oriented API (no pyplot state): a run's
curves, the methods of a dataset side by side per network, and a sweep's heatmap."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from sdrun.report.runs import Run
from sdrun.report.table import Row, Sweep, _is_number, _mean, _model_order, _sort_key, _std


def _figure(width: float = 7.0, height: float = 4.0):
    # The object-oriented API with the Agg canvas: no display, no global pyplot state.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def plot_run(run: Run, path: Path) -> bool:
    """Student and teacher test accuracy and the LR against epochs, cycle ends dashed."""
    from matplotlib.ticker import MaxNLocator

    records = [r for r in run.metrics if r.get("epoch") is not None]
    if not records:
        return False
    epochs = [r["epoch"] for r in records]
    fig = _figure()
    ax = fig.subplots()
    student = [_nan(r.get("student/top1")) for r in records]
    ax.plot(epochs, student, marker=".", ms=3, lw=1.6, label="student top-1")
    teacher = [_nan(r.get("teacher/top1")) for r in records]
    if not all(math.isnan(v) for v in teacher):
        ax.plot(epochs, teacher, marker=".", ms=3, lw=1.2, drawstyle="steps-post",
                label="teacher top-1 (frozen snapshot)")  # fmt: skip
    for i, end in enumerate(_cycle_ends(records)):
        ax.axvline(end, color="grey", ls="--", lw=0.8, label=None if i else "cycle end")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lr_ax = ax.twinx()
    lr_ax.plot(epochs, [_nan(r.get("lr")) for r in records], color="tab:red", lw=0.9, alpha=0.6)
    lr_ax.set_ylabel("LR (last iteration of the epoch)", color="tab:red")
    lr_ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    state = "  [INCOMPLETE]" if not run.complete else ""
    ax.set_title(f"{run.dataset} {run.model} {run.method} seed {run.seed}{state}", fontsize=10)
    fig.savefig(path)
    return True


def _nan(value: Any) -> float:
    """None (no teacher yet, or a non-finite value written as null) plots as a gap."""
    return math.nan if value is None else float(value)


def _cycle_ends(records: list[dict[str, Any]]) -> list[int]:
    """Epochs after which a new cycle starts (a snapshot became the teacher)."""
    return [a["epoch"] for a, b in zip(records, records[1:]) if a.get("cycle") != b.get("cycle")]


def plot_methods(rows: list[Row], path: Path) -> None:
    """Grouped bars: one group per network, one bar per method, std as error bars.

    The y axis starts near the lowest bar, not at 0: differences of a point or two are
    what matters here, and every bar is labelled with its value.
    """
    models = sorted({r.model for r in rows}, key=_model_order)
    labels = list(dict.fromkeys(r.label for r in rows))
    long_labels = any(len(label) > 24 for label in labels)
    legend_rows = len(labels) if long_labels else -(-len(labels) // 4)
    fig = _figure(max(6.0, 0.45 * len(models) * len(labels) + 2.5), 4.0 + 0.2 * legend_rows)
    ax = fig.subplots()
    width = 0.8 / len(labels)
    lows, highs = [], []
    for j, label in enumerate(labels):
        xs, heights, errs = [], [], []
        for i, model in enumerate(models):
            err = next((r.errors() for r in rows if r.model == model and r.label == label), [])
            if err:
                xs.append(i + (j - (len(labels) - 1) / 2) * width)
                heights.append(statistics.fmean(err))
                errs.append(_std(err) or 0.0)
        bars = ax.bar(xs, heights, width, yerr=errs, capsize=3, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        lows += [h - e for h, e in zip(heights, errs)]
        highs += [h + e for h, e in zip(heights, errs)]
    if lows:
        span = max(highs) - min(lows)
        ax.set_ylim(max(0.0, min(lows) - 0.5 * span - 1), max(highs) + 0.3 * span + 1)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("final top-1 error (%), mean ± std")
    ax.set_title(f"{rows[0].dataset}: methods per network (lower is better)", fontsize=10)
    ncols = 1 if long_labels else min(4, len(labels))
    fig.legend(fontsize=8, loc="outside lower center", ncols=ncols)
    fig.savefig(path)


def plot_sweep(sweep: Sweep, path: Path) -> bool:
    """Heatmap of mean final accuracy over the two swept values (rows: first key)."""
    if len(sweep.axes) != 2:
        return False
    cells = sweep.cells()
    ys = sorted({k[0] for k in cells}, key=_sort_key)
    xs = sorted({k[1] for k in cells}, key=_sort_key)
    if not all(_is_number(v) for v in ys + xs):
        return False
    grid = [[_mean(cells.get((y, x), [])) for x in xs] for y in ys]
    fig = _figure(max(4.8, 2.6 + 1.0 * len(xs)), max(3.6, 1.8 + 0.6 * len(ys)))
    ax = fig.subplots()
    image = ax.imshow(
        [[math.nan if v is None else v for v in line] for line in grid], cmap="viridis"
    )
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            value, n = grid[i][j], len(cells.get((y, x), []))
            text = "n/a" if value is None else f"{value:.2f}" + (f"\nn={n}" if n > 1 else "")
            # dark text on the bright end of viridis, light text on the dark end
            dark = value is not None and image.norm(value) > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="black" if dark else "white")  # fmt: skip
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(sweep.axes[1])
    ax.set_ylabel(sweep.axes[0])
    fig.colorbar(image, ax=ax, label="final top-1 (%), mean over seeds")
    ax.set_title(sweep.path.name, fontsize=9)
    fig.savefig(path)
    return True
