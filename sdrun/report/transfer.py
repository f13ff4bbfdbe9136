"""The transfer table: fine-tuning results of `sdrun-transfer` runs by backbone pre-training
method x task, and SD's gain over each other backbone.

A transfer run is a run directory whose config has `task.name` and `backbone` (its summary
then holds `backbone/*`). Complete runs are grouped by task, backbone network, pre-training
(method and data set, or timm / scratch) and every fine-tuning setting but the seed; each
group is a row: mAP50 (detection, VOC07 11-point) or mIoU (segmentation), mean +- std over
its seeds, with n.

SD's gain over another backbone (same task, network and fine-tuning settings) is the
difference of the metric with the main table's statistics (`sdrun.report.stats.difference`):
paired by seed when the rows share at least 2 seeds, else unpaired over all their runs
(Welch); with its standard error and a t-based 95 % interval. A seed run twice counts once
(its newest run), as in the main table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdrun.report.markdown import num, table
from sdrun.report.runs import SUMMARY, Run
from sdrun.report.stats import MIN_PAIRS, Difference, difference, mean, sample_std

METRICS = {"detection": "test/map50", "segmentation": "test/miou"}
METRIC_NAMES = {"detection": "mAP50 (VOC07 11-pt)", "segmentation": "mIoU"}
SD = "sd"
# Config keys that say how a backbone was fine-tuned; paths and loader settings do not.
RECIPE = ("task.", "dataset.", "schedule.", "optim.")
NOT_RECIPE = {"dataset.root", "dataset.download", "dataset.num_workers", "dataset.eval_batch_size"}


def is_transfer(run: Run) -> bool:
    return "task.name" in run.config and "backbone" in run.config


def split_runs(runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """(sdrun runs, transfer runs)."""
    transfer = [r for r in runs if is_transfer(r)]
    return [r for r in runs if not is_transfer(r)], transfer


def problem(run: Run) -> Optional[str]:
    """Why a transfer run cannot be averaged (None: it can). Judged from its summary alone:
    the report's own completeness check looks for classification keys."""
    if not run.summary:
        return run.problem or "no summary.json (killed, failed or still running)"
    if run.summary.get("complete") is not True:
        return f"incomplete: summary.json says complete={run.summary.get('complete')}"
    metric = METRICS.get(str(run.config.get("task.name")))
    if metric is None or run.summary.get(metric) is None:
        return (
            f"summary.json has no {metric or 'metric for task ' + str(run.config.get('task.name'))}"
        )
    return None


def pretraining(run: Run) -> str:
    """How the backbone was pre-trained: `sd (cifar100)`, `cosine (imagenet)`, `timm`, ..."""
    s = run.summary
    method = str(s.get("backbone/method", "?"))
    data = s.get("backbone/dataset")
    return f"{method} ({data})" if data else method


def recipe(run: Run) -> tuple:
    keys = {k: v for k, v in run.config.items() if k.startswith(RECIPE) and k not in NOT_RECIPE}
    keys["data/train"] = run.summary.get("data/train")  # SBD used or not
    return tuple(sorted((k, str(v)) for k, v in keys.items()))


@dataclass
class TransferRow:
    task: str
    model: str
    method: str  # the backbone's pre-training method (sd, cosine, ..., timm, scratch)
    pretraining: str  # method with its data set
    recipe: tuple
    runs: list[Run] = field(default_factory=list)
    variant: str = ""

    @property
    def metric(self) -> str:
        return METRICS[self.task]

    def by_seed(self) -> dict[Any, float]:
        """The metric per seed; `runs` holds each seed once (build_rows keeps the newest)."""
        return {r.seed: float(r.summary[self.metric]) for r in self.runs}

    def values(self) -> list[float]:
        return [float(r.summary[self.metric]) for r in self.runs]

    @property
    def label(self) -> str:
        return f"{self.pretraining} [{self.variant}]" if self.variant else self.pretraining


def newest_per_seed(runs: Sequence[Run]) -> list[Run]:
    """One run per seed, the one whose summary was written last (a seed run again replaces
    its earlier run, never counts twice)."""
    newest: dict[Any, Run] = {}
    for run in sorted(runs, key=lambda r: (r.path / SUMMARY).stat().st_mtime):
        newest[run.seed] = run
    return sorted(newest.values(), key=lambda r: str(r.seed))


def build_rows(runs: Sequence[Run]) -> list[TransferRow]:
    rows: dict[tuple, TransferRow] = {}
    for run in runs:
        task = str(run.config.get("task.name"))
        model = str(run.summary.get("backbone/model", "?"))
        key = (task, model, pretraining(run), recipe(run))
        method = str(run.summary.get("backbone/method", "?"))
        rows.setdefault(key, TransferRow(task, model, method, key[2], key[3])).runs.append(run)
    for row in rows.values():
        row.runs = newest_per_seed(row.runs)
    out = sorted(rows.values(), key=lambda r: (r.task, r.model, r.method != SD, r.pretraining))
    _name_variants(out)
    return out


def _name_variants(rows: list[TransferRow]) -> None:
    """Rows of one task/model/pre-training that differ in fine-tuning settings: say how."""
    groups: dict[tuple, list[TransferRow]] = {}
    for row in rows:
        groups.setdefault((row.task, row.model, row.pretraining), []).append(row)
    for same in (g for g in groups.values() if len(g) > 1):
        dicts = [dict(r.recipe) for r in same]
        differ = sorted(k for k in set().union(*dicts) if len({d.get(k) for d in dicts}) > 1)
        for row, d in zip(same, dicts):
            row.variant = ", ".join(f"{k}={d.get(k)}" for k in differ)


def gain(sd: TransferRow, other: TransferRow) -> Difference:
    return difference(sd.by_seed(), other.by_seed())


def sd_gains(rows: Sequence[TransferRow]) -> list[tuple[TransferRow, TransferRow, Difference]]:
    """SD's gain over every other backbone fine-tuned the same way on the same network."""
    out = []
    for sd in (r for r in rows if r.method == SD):
        for other in rows:
            same = (other.task, other.model, other.recipe) == (sd.task, sd.model, sd.recipe)
            if same and other.method != SD:
                out.append((sd, other, gain(sd, other)))
    return out


# --- writing --------------------------------------------------------------------------------

ROW_COLUMNS = ["task", "model", "pretraining", "variant", "metric", "n", "mean", "std", "seeds"]
GAIN_COLUMNS = ["task", "model", "sd", "other", "gain", "gain_se", "gain_ci95_low",
                "gain_ci95_high", "ci95_includes_0", "pairing", "n_sd", "n_other"]  # fmt: skip


def row_record(row: TransferRow) -> dict[str, Any]:
    values = row.values()
    return {
        "task": row.task, "model": row.model, "pretraining": row.pretraining,
        "variant": row.variant, "metric": row.metric, "n": len(values),
        "mean": mean(values),
        "std": sample_std(values),
        "seeds": " ".join(str(r.seed) for r in sorted(row.runs, key=lambda r: str(r.seed))),
    }  # fmt: skip


def gain_record(sd: TransferRow, other: TransferRow, est: Difference) -> dict[str, Any]:
    low, high = est.ci95 or (None, None)
    return {
        "task": sd.task, "model": sd.model, "sd": sd.label, "other": other.label,
        "gain": est.gain, "gain_se": est.se, "gain_ci95_low": low, "gain_ci95_high": high,
        "ci95_includes_0": None if est.includes_zero is None else str(est.includes_zero).lower(),
        "pairing": est.pairing, "n_sd": est.n_a, "n_other": est.n_b,
    }  # fmt: skip


def markdown(rows: Sequence[TransferRow], incomplete: Sequence[tuple[Run, str]]) -> list[str]:
    """The RESULTS.md section (empty without transfer runs)."""
    if not rows and not incomplete:
        return []
    md = [
        "", "## Transfer to PASCAL VOC", "",
        "Fine-tuned with `sdrun-transfer`: detection = Faster R-CNN + FPN, VOC07+12 -> VOC2007 "
        "test, mAP at IoU 0.5 (VOC07 11-point AP, the test set's own protocol; all-point AP is "
        "in each summary.json); segmentation = DeepLabV3, VOC2012 train -> val, mIoU. Mean ± "
        "std over seeds (std from 2 seeds on), n runs.", "",
    ]  # fmt: skip
    lines = []
    for row in rows:
        rec = row_record(row)
        mean_std = num(rec["mean"]) + ("" if rec["std"] is None else f" ± {num(rec['std'])}")
        lines.append([row.task, row.model, row.label, METRIC_NAMES[row.task], mean_std,
                      str(rec["n"]), rec["seeds"]])  # fmt: skip
    md += table(["task", "backbone", "pre-training", "metric", "mean ± std", "n", "seeds"], lines)
    gains = sd_gains(rows)
    if gains:
        md += [
            "", "### SD backbone's gain over each other backbone", "",
            "Metric points SD's backbone is better by: paired by seed when both rows share at "
            f"least {MIN_PAIRS} seeds (same head initialisation and data order), else the "
            "difference of the means over all runs (Welch); SE and t-based 95 % interval "
            "(none below 2 runs a side).", "",
        ]  # fmt: skip
        lines = [
            [sd.task, sd.model, sd.label, other.label, num(e.gain), num(e.se),
             "-" if e.ci95 is None else f"[{num(e.ci95[0])}, {num(e.ci95[1])}]", e.pairing,
             str(e.n_a), str(e.n_b)]
            for sd, other, e in gains
        ]  # fmt: skip
        md += table(["task", "backbone", "SD", "other", "gain", "SE", "95 % CI", "pairing",
                      "n SD", "n other"], lines)  # fmt: skip
    if incomplete:
        md += ["", "Transfer runs not averaged:", ""]
        md += [f"- `{run.path}`: {why}" for run, why in incomplete]
    return md


def transfer_section(runs: Sequence[Run], out: Path) -> list[str]:
    """Write transfer.csv and transfer_gains.csv into `out`; return the markdown section."""
    from sdrun.report.write import write_csv  # the report's CSV writer (rounding, empty cells)

    complete = [r for r in runs if problem(r) is None]
    incomplete = [(r, problem(r) or "") for r in runs if problem(r) is not None]
    rows = build_rows(complete)
    if rows:
        write_csv(out / "transfer.csv", [row_record(r) for r in rows], ROW_COLUMNS)
        records = [gain_record(*g) for g in sd_gains(rows)]
        write_csv(out / "transfer_gains.csv", records, GAIN_COLUMNS)
    return markdown(rows, incomplete)
