"""The transfer table in RESULTS.md, transfer.csv and transfer_gains.csv (rows: transfer.py).

One statistic, as in the main table: mean ± SE with its t-based 95 % interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdrun.report import stats
from sdrun.report.escape import code
from sdrun.report.escape import md as md_text
from sdrun.report.md_format import interval, mean_se, num, table
from sdrun.report.model import Report
from sdrun.report.runs import Run
from sdrun.report.transfer import METRIC_NAMES, TransferRow, build_rows, problem
from sdrun.report.transfer_gains import TransferGain, TransferNotCompared, sd_gains

ROW_COLUMNS = ["task", "model", "pretraining", "variant", "metric", "n_runs", "n_backbones",
               "over", "n", "mean", "se", "ci95_low", "ci95_high", "std", "backbone_seeds",
               "seeds"]  # fmt: skip
GAIN_COLUMNS = ["task", "model", "sd", "other", "gain", "gain_se", "gain_df", "gain_ci95_low",
                "gain_ci95_high", "ci95_includes_0", "pairing", "n_sd", "n_other",
                "unit"]  # fmt: skip


def row_record(row: TransferRow) -> dict[str, Any]:
    """A transfer.csv row; `n` counts the samples mean, SE and interval are over (`over`)."""
    values = row.values()
    ci = stats.mean_interval(values)
    groups = row.by_backbone()
    return {
        "task": row.task, "model": row.model, "pretraining": row.pretraining,
        "variant": row.variant, "metric": row.metric, "n_runs": len(row.runs),
        "n_backbones": len(groups), "over": row.unit, "n": len(values),
        "mean": stats.mean(values), "se": stats.standard_error(values),
        "ci95_low": None if ci is None else ci[0], "ci95_high": None if ci is None else ci[1],
        "std": stats.sample_std(values),
        "backbone_seeds": " ".join(str(row.backbones[runs[0].path].seed) for runs in
                                   groups.values()),
        "seeds": " ".join(sorted({str(r.seed) for r in row.runs})),
    }  # fmt: skip


def gain_record(g: TransferGain) -> dict[str, Any]:
    est = g.diff
    low, high = est.ci95 or (None, None)
    return {
        "task": g.sd.task, "model": g.sd.model, "sd": g.sd.label, "other": g.other.label,
        "gain": est.gain, "gain_se": est.se, "gain_df": est.df, "gain_ci95_low": low,
        "gain_ci95_high": high,
        "ci95_includes_0": None if est.includes_zero is None else str(est.includes_zero).lower(),
        "pairing": est.pairing, "n_sd": est.n_a, "n_other": est.n_b, "unit": g.unit,
    }  # fmt: skip


INTRO = (
    "Fine-tuned with `sdrun-transfer`: detection = Faster R-CNN + FPN, VOC07+12 -> VOC2007 "
    "test, mAP at IoU 0.5 (VOC07 11-point AP, the test set's own protocol; all-point AP is in "
    "each summary.json); segmentation = DeepLabV3, VOC2012 train -> val, mIoU. A row is one "
    "pre-training recipe (the backbone run's method and settings, not its seed) fine-tuned one "
    "way; it holds every backbone of that recipe with each of its fine-tuning seeds (*runs*). "
    "`mean ± SE [95 % interval]` as in the main table, over *backbones* (each the mean of its "
    "fine-tuning runs: the pre-training seed is the sample) when the row has 2 or more, else "
    "over the fine-tuning runs of its one backbone (fine-tuning spread only)."
)


def markdown(
    rows: Sequence[TransferRow], incomplete: Sequence[tuple[Run, str]], notes: Sequence[str]
) -> list[str]:
    """The RESULTS.md section (empty without transfer runs)."""
    if not rows and not incomplete:
        return []
    md = ["", "## Transfer to PASCAL VOC", "", INTRO, ""]
    lines = []
    for row in rows:
        rec = row_record(row)
        lines.append([row.task, row.model, row.label, METRIC_NAMES[row.task],
                      mean_se(row.values(), with_interval=True), f"{rec['n']} {row.unit}",
                      row.design(), rec["backbone_seeds"], rec["seeds"]])  # fmt: skip
    header = ["task", "backbone", "pre-training", "metric", "mean ± SE [95 % interval]",
              "n (over)", "runs", "backbone seeds", "fine-tuning seeds"]  # fmt: skip
    md += table(header, lines)
    md += gain_lines(*sd_gains(rows))
    if incomplete or notes:
        md += ["", "Transfer runs not averaged, and notes:", ""]
        md += [f"- {code(run.path)}: {md_text(why)}" for run, why in incomplete]
        md += [f"- {md_text(note)}" for note in notes]
    return md


GAINS_INTRO = (
    "Metric points SD's backbone is better by, over the samples of each row (above): "
    "paired on the seed only when both rows have the same seeds (same initialisation and data "
    "order), else the difference of the means (Welch); SE, degrees of freedom and t-based "
    "95 % interval (none below 2 samples a side). Rows are compared only when their backbones "
    "were pre-trained with the same recipe apart from the method, as in the main table; "
    "*unit* says what each sample is."
)


def gain_lines(gains: Sequence[TransferGain], skipped: Sequence[TransferNotCompared]) -> list[str]:
    """The gains table, and the pairs not compared with why."""
    md = []
    if gains:
        lines = [
            [g.sd.task, g.sd.model, g.sd.label, g.other.label, num(g.diff.gain), num(g.diff.se),
             num(g.diff.df, 1), interval(g.diff.ci95), g.diff.pairing, g.unit,
             g.diff.no_interval or ""]
            for g in gains
        ]  # fmt: skip
        header = ["task", "backbone", "SD", "other", "gain", "SE", "df", "95 % CI", "pairing",
                  "unit", "note"]  # fmt: skip
        md += ["", "### SD backbone's gain over each other backbone", "", GAINS_INTRO, ""]
        md += table(header, lines)
    if skipped:
        md += ["", "Backbones not compared, and why:", ""]
        md += [f"- {md_text(f'{n.sd.task} {n.sd.model}: {n.sd.label} vs {n.other.label}: ')}"
               + md_text("; ".join(n.reasons)) for n in skipped]  # fmt: skip
    return md


def transfer_section(report: Report) -> list[str]:
    """Write transfer.csv and transfer_gains.csv into the report folder; return the markdown
    section."""
    runs = report.transfer_runs
    complete = [r for r in runs if problem(r) is None]
    incomplete = [(r, problem(r) or "") for r in runs if problem(r) is not None]
    rows, notes = build_rows(complete, report.scope)
    if rows and report.folder is not None:
        report.folder.write_csv("transfer.csv", [row_record(r) for r in rows], ROW_COLUMNS)
        records = [gain_record(g) for g in sd_gains(rows)[0]]
        report.folder.write_csv("transfer_gains.csv", records, GAIN_COLUMNS)
    return markdown(rows, incomplete, notes)
