"""RESULTS.md: the tables, gains, sweeps and problems of a Report, as Markdown lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from sdrun.report import stats
from sdrun.report.gains import Gain, rows_without_sd
from sdrun.report.references import other_networks, recipe_differences
from sdrun.report.sweeps import Sweep
from sdrun.report.table import Row, _fmt_value, _sort_key, ensemble_gain, row_record

if TYPE_CHECKING:
    from sdrun.report.write import Report

TABLE_HEADER = [
    "model", "method", "ran on", "n", "top-1 err", "best-epoch err (test-selected)",
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


def num(value: Optional[float], digits: int = 2) -> str:
    """A number cell: `digits` decimals, "-" when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def _sig(value: Optional[float]) -> str:
    """Three significant digits: hours range from a smoke run's 0.0003 to a chain's 30."""
    return "-" if value is None else f"{value:.3g}"


def mean_se(values: Sequence[float], interval: bool = False) -> str:
    """`mean ± SE` (and `[low, high]`); the mean alone for one value."""
    if not values:
        return "-"
    se = stats.standard_error(values)
    text = num(stats.mean(values)) + ("" if se is None else f" ± {num(se)}")
    ci = stats.mean_interval(values) if interval else None
    if interval and ci is None and se == 0.0:
        return text + " [no interval: every value equal]"
    return text + ("" if ci is None else f" [{num(ci[0])}, {num(ci[1])}]")


def _of(text: str, k: int, n: int) -> str:
    """A secondary value over k of the row's n runs says so."""
    return text if k == n or text == "-" else f"{text} (n={k})"


def table(header: Sequence[str], lines: list[Sequence[str]]) -> list[str]:
    """A Markdown table (a "|" in a cell escaped)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return out


def ran_on(row: Row) -> str:
    sig = row.signature
    text = f"{sig.get('runtime.device')} x{sig.get('runtime.processes')}"
    text += f", amp {sig.get('runtime.amp')}"
    sync = sig.get("runtime.sync_bn")
    return text + ("" if sync is False else f", sync_bn {sync}")


def _published(row: Row) -> str:
    parts = []
    for ref, diffs in row.references:
        state = "recipe not given" if ref.recipe is None else (
            "recipe differs" if diffs else "same recipe")  # fmt: skip
        parts.append(f"{ref.err:.2f} ({state})")
    return "; ".join(parts) or "-"


def _row_line(row: Row) -> list[str]:
    rec, n = row_record(row), row.n
    diverged = f" (+{len(row.diverged)} diverged)" if row.diverged else ""
    _, gain, _ = ensemble_gain(row)
    ensemble = num(rec["ensemble_err_mean"])
    if gain is not None:
        ensemble += f" ({gain:+.2f} top-1)"
    lost = rec["process_h_lost_mean"]
    cost = _sig(rec["process_h_mean"]) + ("" if lost is None else f" ({_sig(lost)})")
    return [
        row.model, row.label, ran_on(row), f"{n}{diverged}", mean_se(row.errors(), interval=True),
        _of(num(rec["best_epoch_err_mean_test_selected"]), rec["best_epoch_err_n"], n),
        _of(num(rec["val_selected_err_mean"]), rec["val_selected_err_n"], n),
        _of(num(rec["teacher_err_mean"]), rec["teacher_err_n"], n),
        _of(ensemble, rec["ensemble_n"], n),
        _of(_sig(rec["wall_h_mean"]), rec["wall_h_n"], n),
        _of(cost, rec["process_h_n"], n),
        _of(_sig(rec["process_h_with_teachers_mean"]), rec["process_h_with_teachers_n"], n),
        _published(row),
    ]  # fmt: skip


def intro(report: Report) -> list[str]:
    roots = ", ".join(f"`{p}`" for p in report.roots)
    n_runs = sum(r.n for r in report.rows)
    n_diverged = sum(len(r.diverged) for r in report.rows)
    return [
        "# Results",
        "",
        f"From {roots}: {n_runs} complete runs in {len(report.rows)} rows; {n_diverged} "
        f"diverged (counted per row); {len(report.incomplete)} incomplete (listed at the end, "
        "not averaged).",
        "",
        INTRO,
    ]


def tables(report: Report) -> list[str]:
    md: list[str] = []
    for dataset in dict.fromkeys(r.dataset for r in report.rows):
        rows = [row for row in report.rows if row.dataset == dataset]
        md += ["", f"## {dataset}", "", *table(TABLE_HEADER, [_row_line(r) for r in rows])]
        refs = [(row, ref, d) for row in rows for ref, d in row.references]
        if refs:
            md += ["", "Published values (top-1 error, %), and how each row's recipe differs:"]
            md += [
                f"- {row.model} {row.label}: {ref.err:.2f}, {ref.source}"
                + ("; same recipe" if not d else "; " + "; ".join(d))
                for row, ref, d in refs
            ]
        others = other_network_lines(rows)
        if others:
            md += ["", *others]
        if dataset in report.method_plots:
            md += ["", f"![methods per network]({report.link(report.method_plots[dataset])})"]
    return md


OTHER_NETWORKS = (
    "Published values on networks this table does not train (top-1 error, %; each source's own "
    "CIFAR variant of the network, so no row stands beside them), for the methods this table "
    "has rows of. *CE* is the source's cross-entropy baseline, set beside `cosine`, the "
    "baseline of the self-distillation methods here."
)


def other_network_lines(rows: Sequence[Row]) -> list[str]:
    """Per source, a table of its published values on networks sdrun does not train for the
    methods of `rows` (one dataset), then how its recipe differs from those rows': one line per
    distinct list of differences, naming the networks (and, when the rows of a method differ
    among themselves, e.g. a smoke run beside a full one, the rows) it holds for."""
    by_method: dict[str, list[Row]] = {}
    for row in rows:
        by_method.setdefault(row.method, []).append(row)
    refs = other_networks(rows[0].dataset, by_method) if rows else []
    md: list[str] = []
    for source in dict.fromkeys(ref.source for ref in refs):
        mine = [ref for ref in refs if ref.source == source]
        columns = list(dict.fromkeys((ref.method, ref.column) for ref in mine))
        networks = list(dict.fromkeys(ref.network for ref in mine))
        value = {(ref.network, ref.method): f"{ref.err:.2f}" for ref in mine}
        lines = [[net, *(value.get((net, m), "-") for m, _ in columns)] for net in networks]
        header = ["network", *(f"{m}: {col}" for m, col in columns)]
        md += ["", f"{source}:", "", *table(header, lines), ""]
        md.append("How its recipe differs from this table's rows (`row vs published`):")
        for method, _ in columns:
            same = by_method[method]
            groups: dict[tuple[str, ...], dict[str, list[str]]] = {}
            for ref in (r for r in mine if r.method == method):
                for row in same:
                    diffs = tuple(recipe_differences(ref, row.signature))
                    group = groups.setdefault(diffs, {"rows": [], "nets": []})
                    for key, item in (("rows", f"{row.model} {row.label}"), ("nets", ref.network)):
                        if item not in group[key]:
                            group[key].append(item)
            for diffs, group in groups.items():
                nets = group["nets"]
                which = "every network" if len(nets) == len(networks) else ", ".join(nets)
                who = method if len(group["rows"]) == len(same) else ", ".join(group["rows"])
                md.append(f"- {who} vs {which}: " + ("; ".join(diffs) or "same recipe"))
    return [OTHER_NETWORKS, *md] if md else []


def _gain_note(gain: Gain) -> str:
    d, notes = gain.diff, []
    if d.includes_zero:
        notes.append("interval includes 0")
    elif d.ci95 is None:
        notes.append(d.no_interval or "no interval")
    if not gain.uses_all_runs:
        notes.append(f"shared seeds only: {d.n_a} of {gain.sd.n} SD runs, "
                     f"{d.n_b} of {gain.baseline.n} baseline runs")  # fmt: skip
    for side, row in (("SD", gain.sd), ("baseline", gain.baseline)):
        if row.diverged:
            notes.append(f"{side}: {len(row.diverged)} diverged run(s) not in the gain")
    return "; ".join(notes)


def _verdict(all_gains: Sequence[Gain]) -> str:
    """What the intervals say, and for which gains there is none (never "no interval includes
    0" when some gains have no interval at all)."""

    def name(g: Gain) -> str:
        return f"{g.sd.label} vs {g.baseline.label} ({g.sd.model})"

    zero = [name(g) for g in all_gains if g.diff.includes_zero]
    none = [name(g) for g in all_gains if g.diff.ci95 is None]
    if len(none) == len(all_gains):
        return (
            "No 95 % interval could be computed for any gain (each note says why): "
            "these gains are not evidence either way."
        )
    parts = []
    if zero:
        parts.append("The 95 % interval **includes 0** - no difference shown at this number "
                     f"of seeds - for: {', '.join(zero)}.")  # fmt: skip
    else:
        parts.append("No computed 95 % interval includes 0.")
    if none:
        parts.append(f"No interval could be computed for: {', '.join(none)}.")
    return " ".join(parts)


def gains(report: Report) -> list[str]:
    if not report.gains:
        return []
    lines = []
    for g in report.gains:
        d = g.diff
        ci = "-" if d.ci95 is None else f"[{num(d.ci95[0])}, {num(d.ci95[1])}]"
        lines.append([g.sd.dataset, g.sd.model, g.sd.label, g.baseline.label,
                      num(d.gain) + ("" if d.se is None else f" ± {num(d.se)}"), ci,
                      d.pairing, f"{d.n_a} / {d.n_b}", f"{num(d.mean_a)} / {num(d.mean_b)}",
                      _gain_note(g)])  # fmt: skip
    verdict = _verdict(report.gains)
    header = ["dataset", "model", "SD", "baseline", "gain ± SE", "95 % interval", "pairing",
              "n SD / baseline", "top-1 SD / baseline (these runs)", "note"]  # fmt: skip
    return [
        "",
        "## SD gain over each baseline",
        "",
        "Top-1 points SD is better by (= error points it removes), ± its standard error, and "
        "the t-based 95 % interval. Paired by seed (*paired n=k*: the mean of the k per-seed "
        "differences; a born-again row pairs on its chain's root seed) when the rows share at "
        "least 2 seeds and the shared seeds are at least 2/3 of each row's runs, else "
        "*unpaired*: the difference of the means of all runs, with Welch's standard error "
        "(pairing on a few shared seeds would drop most runs). The top-1 means shown are over "
        "exactly the runs the gain uses. Rows are compared when every setting agrees, the "
        "method aside; a setting one row has and the other lacks is a difference, unless the "
        "row without it does not read it.",
        "",
        *table(header, lines),
        "",
        verdict,
    ]


def not_compared(report: Report) -> list[str]:
    items = [
        f"- {n.sd.dataset} {n.sd.model}: {n.sd.label} vs {n.baseline.label}: "
        + "; ".join(n.reasons)
        for n in report.not_compared
    ]
    items += [
        f"- {r.dataset} {r.model}: {r.label}: no SD row of this dataset and network"
        for r in rows_without_sd(report.rows)
    ]
    if not items:
        return []
    return ["", "## Baselines not compared, and why", "", *items]


def _sweep_lines(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    cells = sorted(sweep.cells().items(), key=lambda kv: [_sort_key(v) for v in kv[0]])
    header = [*sweep.axes, "final top-1 err (%)", "n", "diverged"]
    if sweep.has_val:
        header.append("val top-1 err (%)")
    best_val = min((c.val_mean for _, c in cells if c.val_mean is not None), default=None)
    lines = []
    for key, cell in cells:
        line = [*map(_fmt_value, key), mean_se(cell.errors()), str(len(cell.runs)),
                str(len(cell.diverged))]  # fmt: skip
        if sweep.has_val:
            mark = " (best on val)" if best_val is not None and cell.val_mean == best_val else ""
            line.append(mean_se(cell.errors("val/top1")) + mark)
        lines.append(line)
    return header, lines


def sweeps(report: Report) -> list[str]:
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
        header, lines = _sweep_lines(sweep)
        md += table(header, lines)
        md += [
            "",
            "Picking the best cell of this table is **a choice made on the test set**: the "
            "chosen value is then optimistic, as it was selected on the same images it is "
            "measured on. Choose on a validation split instead (`dataset.val_split` holds out "
            "part of the training set; runs then record `val/top1`) and report the test error "
            "of the cell chosen on validation."
            + (" The *val top-1* column is that choice." if sweep.has_val else ""),
        ]
    return md


def runs(report: Report) -> list[str]:
    """One line per run: what it is, its curves, where it lives."""
    if not report.run_plots:
        return []
    md = ["", "## Runs", ""]
    for run in sorted(report.runs, key=lambda r: str(r.path)):
        if run.path in report.run_plots:
            state = "" if run.complete else " (diverged)" if run.diverged else " (incomplete)"
            md.append(
                f"- {run.dataset} {run.model} {run.method} seed {run.seed}{state}: "
                f"[curves]({report.link(report.run_plots[run.path])}), `{report.link(run.path)}`"
            )
    return md


def problems(report: Report) -> list[str]:
    diverged = [f"- `{r.path}`: {r.reason}" for row in report.rows for r in row.diverged]
    items = [f"- `{r.path}`: {r.reason}" for r in report.incomplete]
    items += [f"- {note}" for note in report.notes]
    md = []
    if diverged:
        md += ["", "## Diverged runs (counted in their rows, not averaged)", "", *diverged]
    if items:
        md += ["", "## Incomplete or unreadable runs (not averaged)", "", *items]
    return md


def results_md(report: Report) -> list[str]:
    return [
        *intro(report), *tables(report), *gains(report), *not_compared(report),
        *sweeps(report), *runs(report), *problems(report),
    ]  # fmt: skip
