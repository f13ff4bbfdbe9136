"""RESULTS.md: the introduction and the main table of each data set, and the whole file's
sections in order (md_gains.py: the gains; md_sections.py: published values on other networks,
sweeps, runs, problems). Text from run folders enters only escaped (escape.py)."""

from __future__ import annotations

from sdrun.report.escape import code, md
from sdrun.report.md_format import mean_se, num, sig3, table
from sdrun.report.md_gains import gains, not_compared
from sdrun.report.md_sections import other_network_lines, problems, runs, sweeps
from sdrun.report.model import Report
from sdrun.report.recipe import SMOKE_EPOCHS, is_smoke, recipe_of, shared_line, shared_settings
from sdrun.report.references import (
    BEST_CHECKPOINT,
    BEST_EPOCH,
    CRD_SELECTION,
    UNSTATED,
    setting_differences,
)
from sdrun.report.table import Row, ensemble_gain, row_record

TABLE_HEADER = [
    "model", "method", "recipe", "ran on", "n", "top-1 err", "best-epoch err (test-selected)",
    "val-selected epoch err", "teacher err", "ensemble err (vs student)", "wall h",
    "process h (lost)", "process h with teachers", "published err",
]  # fmt: skip
INTRO = (
    "Top-1 **error** (%) on the test set at the **final epoch**. Everywhere in this report "
    "`mean ± SE` is a mean and its **standard error** (std / √n; none for n=1) and "
    "`[low, high]` its **t-based 95 % interval** (Student t with n - 1 degrees of freedom: "
    "with 3 seeds about ±4.3 SE). *n* counts seeds, one run each (a seed run twice keeps its "
    "newest run); a column over fewer runs says `(n=k)`. *+k diverged*: runs stopped by a "
    "NaN/infinite loss, counted and not averaged, so the mean is over the other seeds only. "
    "A row is one computation: the settings its method reads, how it ran (*ran on*: device, "
    "processes, AMP, SyncBN) and, for a student of a teacher run, the teacher's recipe. "
    "*Best epoch* is the lowest error of any epoch, **selected on the test set**: optimistic, "
    "shown only to compare with papers that report it. *Val-selected epoch*: the test error at "
    "the epoch with the best accuracy on the validation split (runs with `dataset.val_split`): "
    "a selection that never saw the test set. *Teacher*: the final teacher. "
    "*Ensemble*: the average softmax of the cycle-end snapshots, with its top-1 gain over "
    "the final student of the same runs. *process h*: wall hours x processes, counted per "
    "session (GPU-hours on GPUs, one GPU per process), with the work lost to stops (kills "
    "after the last checkpoint) in brackets, included in the total; *with teachers* adds "
    "every run of the teacher chain: what a born-again result costs."
)


def _of(text: str, k: int, n: int) -> str:
    """A secondary value over k of the row's n runs says so."""
    return text if k == n or text == "-" else f"{text} (n={k})"


def ran_on(row: Row) -> str:
    sig = row.signature
    text = f"{sig.get('runtime.device')} x{sig.get('runtime.processes')}"
    text += f", amp {sig.get('runtime.amp')}"
    sync = sig.get("runtime.sync_bn")
    return text + ("" if sync is False else f", sync_bn {sync}")


def _published(row: Row) -> str:
    """Each published value with whether its recipe is the row's, which epoch it reports and
    whether its placement beside this method is assumed (the list under the table says more)."""
    parts = []
    for ref, _ in row.references:
        differs = setting_differences(ref, row.signature)
        state = ["recipe not given" if ref.recipe is None else (
            "recipe differs" if differs else "same recipe")]  # fmt: skip
        state.append(_SELECTION.get(ref.selection, ref.selection or "final epoch"))
        if ref.placement:
            state.append("placement assumed")
        parts.append(f"{ref.err:.2f} ({'; '.join(state)})")
    return "; ".join(parts) or "-"


_SELECTION = {UNSTATED: "epoch not stated", BEST_EPOCH: "best test epoch",
              BEST_CHECKPOINT: "best test epoch", CRD_SELECTION: "best test epoch"}  # fmt: skip


def _row_line(row: Row, shared: dict) -> list[str]:
    rec, n = row_record(row), row.n
    diverged = f" (+{len(row.diverged)} diverged)" if row.diverged else ""
    _, gain, _ = ensemble_gain(row)
    ensemble = num(rec["ensemble_err_mean"])
    if gain is not None:
        ensemble += f" ({gain:+.2f} top-1)"
    lost = rec["process_h_lost_mean"]
    cost = sig3(rec["process_h_mean"]) + ("" if lost is None else f" ({sig3(lost)})")
    return [
        row.model, row.label, recipe_of(row, shared), ran_on(row), f"{n}{diverged}",
        mean_se(row.errors(), with_interval=True),
        _of(num(rec["best_epoch_err_mean_test_selected"]), rec["best_epoch_err_n"], n),
        _of(num(rec["val_selected_err_mean"]), rec["val_selected_err_n"], n),
        _of(num(rec["teacher_err_mean"]), rec["teacher_err_n"], n),
        _of(ensemble, rec["ensemble_n"], n),
        _of(sig3(rec["wall_h_mean"]), rec["wall_h_n"], n),
        _of(cost, rec["process_h_n"], n),
        _of(sig3(rec["process_h_with_teachers_mean"]), rec["process_h_with_teachers_n"], n),
        _published(row),
    ]  # fmt: skip


def intro(report: Report) -> list[str]:
    roots = ", ".join(code(p) for p in report.roots)
    n_runs = sum(r.n for r in report.rows)
    n_diverged = sum(len(r.diverged) for r in report.rows)
    return [
        "# Results",
        *smoke_banner(report),
        "",
        f"From {roots}: {n_runs} complete runs in {len(report.rows)} rows; {n_diverged} "
        f"diverged (counted per row); {len(report.incomplete)} incomplete (listed at the end, "
        "not averaged).",
        "",
        INTRO,
    ]


def tables(report: Report) -> list[str]:
    md_lines: list[str] = []
    for dataset in dict.fromkeys(r.dataset for r in report.rows):
        rows = [row for row in report.rows if row.dataset == dataset]
        shared = shared_settings(rows)
        lines = [_row_line(r, shared) for r in rows]
        md_lines += ["", f"## {md(dataset)}", "", shared_line(rows), ""]
        md_lines += table(TABLE_HEADER, lines)
        refs = [(row, ref, d) for row in rows for ref, d in row.references]
        if refs:
            md_lines += [
                "",
                "Published values (top-1 error, %), and how each row's recipe differs:",
            ]
            md_lines += [
                f"- {md(row.model)} {md(row.label)}: {ref.err:.2f}, {ref.source}"
                + ("; same recipe" if not d else "; " + md("; ".join(d)))
                for row, ref, d in refs
            ]
        others = other_network_lines(rows)
        if others:
            md_lines += ["", *others]
        if dataset in report.method_plots:
            md_lines += ["", f"![methods per network]({report.href(report.method_plots[dataset])})"]
    return md_lines


def smoke_banner(report: Report) -> list[str]:
    """A banner over the whole file when any row is a smoke run: its numbers mean nothing."""
    smoke = [row for row in report.rows if is_smoke(row)]
    if not smoke:
        return []
    return [
        "",
        f"> **Smoke run: these numbers mean nothing.** {len(smoke)} of {len(report.rows)} rows "
        f"trained fewer than {SMOKE_EPOCHS} epochs or on a subset of the data (marked SMOKE in "
        "their recipe): they check that the pipeline runs, not how the methods compare.",
    ]


def results_md(report: Report) -> list[str]:
    return [
        *intro(report), *tables(report), *gains(report), *not_compared(report),
        *sweeps(report), *runs(report), *problems(report),
    ]  # fmt: skip
