"""RESULTS.md: published values on networks the table does not train, sweeps, runs and the
runs that are not averaged."""

from __future__ import annotations

from collections.abc import Sequence

from sdrun.report.escape import code, md
from sdrun.report.md_format import mean_se, table
from sdrun.report.model import Report
from sdrun.report.references import other_networks, recipe_differences
from sdrun.report.sweeps import Sweep
from sdrun.report.table import Row, _fmt_value, _sort_key

OTHER_NETWORKS = (
    "Published values on networks this table does not train (top-1 error, %; each source's own "
    "CIFAR variant of the network, so no row stands beside them), for the methods this table "
    "has rows of. *CE* is the source's cross-entropy baseline, set beside `cosine`, the "
    "baseline of the self-distillation methods here."
)
TEST_SET_CHOICE = (
    "Picking the best cell of this table is **a choice made on the test set**: the "
    "chosen value is then optimistic, as it was selected on the same images it is "
    "measured on. Choose on a validation split instead (`dataset.val_split` holds out "
    "part of the training set; runs then record `val/top1`) and report the test error "
    "of the cell chosen on validation."
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
    lines: list[str] = []
    for source in dict.fromkeys(ref.source for ref in refs):
        mine = [ref for ref in refs if ref.source == source]
        columns = list(dict.fromkeys((ref.method, ref.column) for ref in mine))
        networks = list(dict.fromkeys(ref.network for ref in mine))
        value = {(ref.network, ref.method): f"{ref.err:.2f}" for ref in mine}
        cells = [[net, *(value.get((net, m), "-") for m, _ in columns)] for net in networks]
        header = ["network", *(f"{m}: {col}" for m, col in columns)]
        lines += ["", f"{source}:", "", *table(header, cells), ""]
        lines.append("How its recipe differs from this table's rows (`row vs published`):")
        for method, _ in columns:
            lines += _difference_lines(method, by_method[method], mine, networks)
    return [OTHER_NETWORKS, *lines] if lines else []


def _difference_lines(method: str, same: list[Row], mine: list, networks: list[str]) -> list[str]:
    groups: dict[tuple[str, ...], dict[str, list[str]]] = {}
    for ref in (r for r in mine if r.method == method):
        for row in same:
            diffs = tuple(recipe_differences(ref, row.signature))
            group = groups.setdefault(diffs, {"rows": [], "nets": []})
            for key, item in (("rows", f"{row.model} {row.label}"), ("nets", ref.network)):
                if item not in group[key]:
                    group[key].append(item)
    lines = []
    for diffs, group in groups.items():
        nets = group["nets"]
        which = "every network" if len(nets) == len(networks) else ", ".join(nets)
        who = method if len(group["rows"]) == len(same) else ", ".join(group["rows"])
        lines.append(f"- {md(who)} vs {which}: " + (md("; ".join(diffs)) or "same recipe"))
    return lines


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
    lines: list[str] = []
    for sweep in report.sweeps:
        lines += ["", f"## Sweep {code(sweep.path)}", ""]
        if sweep.path in report.sweep_plots:
            lines += [f"![heatmap]({report.href(report.sweep_plots[sweep.path])})", ""]
        else:
            axes = md(sweep.axes)
            lines += [f"(no heatmap: it needs 2 swept numeric values, this sweep has {axes})", ""]
        header, cells = _sweep_lines(sweep)
        lines += table(header, cells)
        val = " The *val top-1* column is that choice." if sweep.has_val else ""
        lines += ["", TEST_SET_CHOICE + val]
    return lines


def runs(report: Report) -> list[str]:
    """One line per run: what it is, its curves, where it lives."""
    if not report.run_plots:
        return []
    lines = ["", "## Runs", ""]
    for run in sorted(report.runs, key=lambda r: str(r.path)):
        if run.path in report.run_plots:
            state = "" if run.complete else " (diverged)" if run.diverged else " (incomplete)"
            what = md(f"{run.dataset} {run.model} {run.method} seed {run.seed}")
            lines.append(f"- {what}{state}: [curves]({report.href(report.run_plots[run.path])}), "
                         f"{code(report.link(run.path))}")  # fmt: skip
    return lines


def problems(report: Report) -> list[str]:
    diverged = [f"- {code(r.path)}: {md(r.reason)}" for row in report.rows for r in row.diverged]
    items = [f"- {code(r.path)}: {md(r.reason)}" for r in report.incomplete]
    items += [f"- {md(note)}" for note in report.notes]
    lines = []
    if diverged:
        lines += ["", "## Diverged runs (counted in their rows, not averaged)", "", *diverged]
    if items:
        lines += ["", "## Incomplete or unreadable runs (not averaged)", "", *items]
    return lines
