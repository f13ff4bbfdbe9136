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

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from sdrun.checkpoint import run_dir_of
from sdrun.config import flatten

CONFIG = Path(".hydra") / "config.yaml"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
MULTIRUN = "multirun.yaml"
# Folders inside a run that never hold runs: not worth walking (checkpoints can be large).
NOT_RUNS = {"checkpoints", "wandb", ".hydra", "report"}
MAX_NAME = 120  # characters of a plot's file name

# Config keys that define what a run computes (the seed aside). Paths and loader settings
# do not change the result, and a kd run's teacher path differs for every seed of a chain.
DEFINING = ("dataset.", "model.", "schedule.", "distill.", "optim.")
NOT_DEFINING = {
    "dataset.root",
    "dataset.download",
    "dataset.eval_batch_size",
    "dataset.num_workers",
    "distill.teacher_checkpoint",
}
# Keys that make up a method; rows are compared (SD gain) only if all other keys agree.
METHOD_KEYS = ("schedule.name", "schedule.cycle_length", "distill.", "teacher")
METHOD_ORDER = ("sd", "cyclic", "cosine", "step")

# Published CIFAR-100 top-1 accuracies (DESIGN.md): (dataset, model, method) -> (low, high,
# source). The baselines are attached to `step`, the schedule those papers trained with.
REFERENCES: dict[tuple[str, str, str], tuple[float, float, str]] = {
    ("cifar100", "resnet32", "step"): (68.39, 68.39, "SD paper baseline (Gou et al. 2021)"),
    ("cifar100", "resnet32", "sd"): (71.29, 71.29, "SD paper (Gou et al. 2021)"),
    ("cifar100", "resnet20", "step"): (68.8, 69.1, "common baseline"),
    ("cifar100", "resnet56", "step"): (72.34, 72.63, "common baseline"),
    ("cifar100", "resnet110", "step"): (74.31, 74.31, "common baseline"),
}


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened: "distill.temperature" -> 2.0
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    problem: Optional[str] = None  # why it is not a complete run; None when complete
    method: str = "?"
    teacher: Optional[Run] = None

    @property
    def complete(self) -> bool:
        return self.problem is None

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset.name", "?"))

    @property
    def model(self) -> str:
        return str(self.config.get("model.name", "?"))

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def generation(self) -> Optional[int]:
        """1 for a run from scratch, teacher's + 1 for kd; None if the chain is broken."""
        if self.config.get("distill.name") != "kd":
            return 1
        parent = None if self.teacher is None else self.teacher.generation
        return None if parent is None else parent + 1

    def signature(self) -> dict[str, Any]:
        """Everything this run computed, except the seed."""
        sig = {
            k: v for k, v in self.config.items() if k.startswith(DEFINING) and k not in NOT_DEFINING
        }
        if self.teacher is not None:
            sig["teacher"] = self.teacher.method  # kd from an SD run is not kd from a baseline
        return sig

    def wall_s(self) -> Optional[float]:
        value = self.summary.get("time/wall_s", self.summary.get("time/train_s"))
        return None if value is None else float(value)

    def gpu_s(self) -> Optional[float]:
        """GPU time (wall x GPUs); None on the CPU."""
        wall = self.wall_s()
        if wall is None or str(self.summary.get("device", "cpu")).lower().startswith("cpu"):
            return None
        return wall * int(self.summary.get("processes", 1))  # one GPU per process

    def wall_s_with_teachers(self) -> Optional[float]:
        """What the result really cost: this run plus every run that trained its teachers."""
        own = self.wall_s()
        if self.config.get("distill.name") != "kd":
            return own
        if self.teacher is None or own is None or not self.teacher.complete:
            return None
        before = self.teacher.wall_s_with_teachers()
        return None if before is None else own + before


# --------------------------------------------------------------------------- reading runs


def find_dirs(paths: Iterable[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(run dirs, sweep dirs, orphans): orphans hold run files but no `.hydra/config.yaml`."""
    runs, sweeps, orphans = set(), set(), set()
    for root in paths:
        for folder, subdirs, files in os.walk(root):
            here = Path(folder)
            if (here / CONFIG).is_file():
                runs.add(here.resolve())
                subdirs.clear()  # a run holds no other runs
                continue
            if MULTIRUN in files:
                sweeps.add(here.resolve())
            elif METRICS in files or SUMMARY in files:
                orphans.add(here.resolve())
            subdirs[:] = sorted(d for d in subdirs if d not in NOT_RUNS)
    return sorted(runs), sorted(sweeps), sorted(orphans)


def load_run(path: Path) -> Run:
    """Read a run directory; a run that cannot be averaged gets a `problem` saying why."""
    try:
        config = flatten(yaml.safe_load((path / CONFIG).read_text()) or {})
    except (OSError, yaml.YAMLError) as err:
        return Run(path, {}, {}, [], problem=f"unreadable {CONFIG}: {err}")
    metrics, cut = read_metrics(path / METRICS)
    run = Run(path, config, {}, metrics)
    epochs = config.get("schedule.epochs", "?")
    done = f"{len(metrics)} of {epochs} epochs done"
    if not (path / SUMMARY).exists():
        what = "no epoch finished" if not metrics else done
        run.problem = f"incomplete: {what}, no {SUMMARY} (killed, failed or still running)"
        return run
    try:
        run.summary = json.loads((path / SUMMARY).read_text())
    except (OSError, ValueError) as err:
        run.problem = f"unreadable {SUMMARY} ({err}); {done}"
        return run
    if run.summary.get("complete") is not True:
        run.problem = f"incomplete: {SUMMARY} says complete={run.summary.get('complete')}; {done}"
    elif run.summary.get("student/top1") is None:
        run.problem = f"{SUMMARY} has no student/top1"
    elif cut:
        run.problem = f"{METRICS} has {cut} unreadable line(s): the file was damaged"
    return run


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, number of unreadable lines): a kill can cut the last line short."""
    if not path.is_file():
        return [], 0
    records, cut = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            cut += 1
    return records, cut


def teacher_dir(run: Run) -> Optional[Path]:
    """The run directory of a kd run's teacher, if it can be found."""
    given = run.config.get("distill.teacher_checkpoint")
    if not given:
        return None
    path = Path(str(given)).expanduser()
    if path.is_dir():
        return path.resolve() if (path / CONFIG).is_file() else None
    return run_dir_of(path) if path.is_file() else None


def method_of(run: Run) -> str:
    distill, schedule = run.config.get("distill.name"), run.config.get("schedule.name")
    if distill == "sd":
        return "sd" if schedule == "sd" else f"sd-{schedule}"
    if distill == "none":
        return "cyclic" if schedule == "sd" else str(schedule)
    if distill == "kd":
        generation = run.generation
        return "kd" if generation is None else f"born-again-g{generation}"
    return str(distill)


def link_teachers(runs: list[Run]) -> None:
    """Attach each kd run's teacher run (read from disk if it was not scanned), then label."""
    by_path = {run.path: run for run in runs}

    def resolve(run: Run, seen: frozenset[Path]) -> None:
        if run.config.get("distill.name") == "kd" and run.teacher is None:
            found = teacher_dir(run)
            if found is not None and found not in seen:
                if found not in by_path:
                    by_path[found] = load_run(found)
                run.teacher = by_path[found]
                resolve(run.teacher, seen | {run.path})
        run.method = method_of(run)

    for run in runs:
        resolve(run, frozenset())


def load_runs(paths: Sequence[Path]) -> tuple[list[Run], list[Path], list[str]]:
    """(runs, sweep dirs, messages about folders that are not readable runs)."""
    run_dirs, sweeps, orphans = find_dirs(paths)
    runs = [load_run(path) for path in run_dirs]
    link_teachers(runs)
    notes = [
        f"{path}: has run files but no {CONFIG}: not a run directory sdrun wrote; skipped"
        for path in orphans
    ]
    return runs, sweeps, notes


# --------------------------------------------------------------------------- rows and gains


@dataclass
class Row:
    dataset: str
    model: str
    method: str
    signature: dict[str, Any]
    runs: list[Run]
    variant: str = ""  # the values that tell this row from others of its dataset/model/method
    notes: list[str] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [float(r.summary[key]) for r in self.runs if r.summary.get(key) is not None]

    def errors(self, key: str = "student/top1") -> list[float]:
        return [100.0 - v for v in self.values(key)]

    def per_run(self, fn: Callable[[Run], Optional[float]]) -> list[float]:
        return [v for v in (fn(r) for r in self.runs) if v is not None]

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    @property
    def reference(self) -> Optional[tuple[float, float, str]]:
        return None if self.variant else REFERENCES.get((self.dataset, self.model, self.method))

    @property
    def label(self) -> str:
        return f"{self.method} ({self.variant})" if self.variant else self.method


def build_rows(runs: Iterable[Run]) -> list[Row]:
    """One row per distinct computation; duplicate seeds keep the newest run, with a note."""
    groups: dict[tuple, Row] = {}
    for run in runs:
        sig = run.signature()
        key = (run.dataset, run.model, run.method, tuple(sorted(sig.items(), key=str)))
        row = groups.setdefault(key, Row(run.dataset, run.model, run.method, sig, []))
        row.runs.append(run)
    rows = sorted(groups.values(), key=_row_order)
    for row in rows:
        _drop_duplicate_seeds(row)
    _name_variants(rows)
    return rows


def _row_order(row: Row) -> tuple:
    rank = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(METHOD_ORDER)
    return (row.dataset, _model_order(row.model), rank, row.method, str(row.signature))


def _model_order(name: str) -> tuple[str, int]:
    """resnet20 < resnet56 < resnet110: by family, then by depth."""
    digits = "".join(c for c in name if c.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else 0)


def _drop_duplicate_seeds(row: Row) -> None:
    newest: dict[Any, Run] = {}
    for run in sorted(row.runs, key=lambda r: (r.path / SUMMARY).stat().st_mtime):
        if run.seed in newest:
            row.notes.append(
                f"seed {run.seed} ran twice; kept {run.path}, not {newest[run.seed].path}"
            )
        newest[run.seed] = run
    row.runs = sorted(newest.values(), key=lambda r: str(r.seed))


def _name_variants(rows: list[Row]) -> None:
    by_kind: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        by_kind.setdefault((row.dataset, row.model, row.method), []).append(row)
    for same in by_kind.values():
        if len(same) < 2:
            continue
        keys = sorted({k for r in same for k in r.signature})
        differ = [k for k in keys if len({str(r.signature.get(k)) for r in same}) > 1]
        names = _short_names(differ)
        for row in same:
            row.variant = ", ".join(
                f"{names[k]}={_fmt_value(row.signature.get(k))}" for k in differ
            )


def _short_names(keys: list[str]) -> dict[str, str]:
    """`distill.temperature` -> `temperature`, unless two keys would then read the same."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def recipe_of(row: Row) -> tuple:
    """The row's setting without its method: only rows that share it are compared."""
    return tuple(
        sorted((k, str(v)) for k, v in row.signature.items() if not k.startswith(METHOD_KEYS))
    )


@dataclass
class Gain:
    sd: Row
    baseline: Row
    mean: float  # top-1 points SD is better by (= error points it removes)
    spread: Optional[float]
    pairs: int  # seeds in both rows (0: rows compared unpaired)


def sd_gains(rows: list[Row]) -> list[Gain]:
    gains = []
    for sd in (r for r in rows if r.method == "sd"):
        for base in rows:
            if base.method == "sd" or (base.dataset, base.model) != (sd.dataset, sd.model):
                continue
            if recipe_of(base) == recipe_of(sd):
                gains.append(_gain(sd, base))
    return gains


def _gain(sd: Row, base: Row) -> Gain:
    """Paired by seed where the rows share seeds: the same seed gives the same initial
    weights and data order, so a per-seed difference has less noise than two means do."""
    a = {r.seed: float(r.summary["student/top1"]) for r in sd.runs}
    b = {r.seed: float(r.summary["student/top1"]) for r in base.runs}
    common = sorted(set(a) & set(b), key=str)
    if common:
        diffs = [a[s] - b[s] for s in common]
        return Gain(sd, base, statistics.fmean(diffs), _std(diffs), len(common))
    sa, sb = _std(list(a.values())), _std(list(b.values()))
    spread = None if sa is None or sb is None else math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    return Gain(sd, base, statistics.fmean(a.values()) - statistics.fmean(b.values()), spread, 0)


def _mean(values: list[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> Optional[float]:
    return statistics.stdev(values) if len(values) >= 2 else None


# --------------------------------------------------------------------------- tables


def _hours(seconds: list[float]) -> Optional[float]:
    return None if not seconds else statistics.fmean(seconds) / 3600.0


def row_record(row: Row) -> dict[str, Any]:
    """The CSV row: plain numbers, empty where there is nothing to report."""
    err = row.errors()
    ref = row.reference
    return {
        "dataset": row.dataset,
        "model": row.model,
        "method": row.method,
        "variant": row.variant,
        "seeds": len(row.runs),
        "seed_list": " ".join(str(s) for s in row.seeds),
        "top1_err_mean": _mean(err),
        "top1_err_std": _std(err),
        "best_epoch_err_mean_test_selected": _mean(row.errors("student/best_top1")),
        "teacher_err_mean": _mean(row.errors("teacher/top1")),
        "ensemble_err_mean": _mean(row.errors("ensemble/top1")),
        "wall_h_mean": _hours(row.per_run(Run.wall_s)),
        "gpu_h_mean": _hours(row.per_run(Run.gpu_s)),
        "wall_h_with_teachers_mean": _hours(row.per_run(Run.wall_s_with_teachers)),
        "published_err_low": None if ref is None else round(100.0 - ref[1], 2),
        "published_err_high": None if ref is None else round(100.0 - ref[0], 2),
        "published_source": "" if ref is None else ref[2],
    }


def gain_record(gain: Gain) -> dict[str, Any]:
    return {
        "dataset": gain.sd.dataset,
        "model": gain.sd.model,
        "sd": gain.sd.label,
        "baseline": gain.baseline.label,
        "gain_top1_points": gain.mean,
        "spread": gain.spread,
        "paired_seeds": gain.pairs,
    }


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


# --------------------------------------------------------------------------- plots


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


@dataclass
class Sweep:
    path: Path
    runs: list[Run]
    axes: list[str]  # the swept config keys (the seed aside)

    def cells(self) -> dict[tuple, list[float]]:
        out: dict[tuple, list[float]] = {}
        for run in self.runs:
            key = tuple(run.config.get(k) for k in self.axes)
            out.setdefault(key, []).append(float(run.summary["student/top1"]))
        return out


def build_sweep(path: Path, runs: list[Run]) -> Sweep:
    inside = [r for r in runs if r.complete and r.path.is_relative_to(path)]
    keys = sorted({k for r in inside for k in r.signature()})
    axes = [k for k in keys if len({str(r.signature().get(k)) for r in inside}) > 1]
    return Sweep(path, inside, axes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if _is_number(value) else (1, 0, str(value))


# --------------------------------------------------------------------------- the report


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
    md = [*_md_intro(report), *_md_tables(report), *_md_gains(report), *_md_sweeps(report)]
    md += [*_md_runs(report), *_md_problems(report)]
    (out / "RESULTS.md").write_text("\n".join(md) + "\n")


RESULT_COLUMNS = list(row_record(Row("", "", "", {}, [])))
GAIN_COLUMNS = ["dataset", "model", "sd", "baseline", "gain_top1_points", "spread", "paired_seeds"]
TABLE_HEADER = [
    "model", "method", "seeds", "top-1 err", "best-epoch err (test-selected)", "teacher err",
    "ensemble err", "wall h", "GPU h", "wall h with teachers", "published err",
]  # fmt: skip


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
        _num(rec["best_epoch_err_mean_test_selected"]), _num(rec["teacher_err_mean"]),
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sdrun-report",
        description="Tables and plots from sdrun run and sweep directories.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs, sweep dirs or any parent")
    parser.add_argument("--out", type=Path, help="output folder (default: <first PATH>/report)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not p.is_dir()]
    if missing:
        print(f"sdrun-report: error: {missing[0]} is not a directory", file=sys.stderr)
        return 2
    out = args.out or args.paths[0] / "report"
    report = build_report(args.paths, out)
    if not report.runs:
        where = ", ".join(map(str, args.paths))
        print(
            f"sdrun-report: error: no run directories under {where} (a run directory holds "
            f"{CONFIG}); point it at outputs/, a run or a sweep directory",
            file=sys.stderr,
        )
        return 1
    write(report)
    for run in report.incomplete:
        print(f"sdrun-report: incomplete, not averaged: {run.path}: {run.problem}", file=sys.stderr)
    for note in report.notes:
        print(f"sdrun-report: {note}", file=sys.stderr)
    n_runs = sum(len(r.runs) for r in report.rows)
    print(
        f"sdrun-report: {n_runs} complete runs in {len(report.rows)} rows -> {out / 'RESULTS.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
