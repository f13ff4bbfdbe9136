"""results.tex: each data set's table as a paper prints it (methods down, networks across, final
top-1 error mean ± SE with its seed count), for `\\input{}` into a paper (needs `booktabs`).

Folder text (a model or data set name) is escaped for LaTeX: a name holding `\\input{...}`
or `%` must print as itself, never run or cut the line.
"""

from __future__ import annotations

from collections.abc import Sequence

from sdrun.report import stats
from sdrun.report.escape import printable
from sdrun.report.md_format import num
from sdrun.report.recipe import is_smoke, recipe_of, shared_settings, shared_text
from sdrun.report.table import Row, _model_order

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def tex(value: object) -> str:
    """Folder text as LaTeX text (one line, every special character escaped)."""
    return "".join(_TEX.get(c, c) for c in printable(str(value)))


def cell(row: Row) -> str:
    errors = row.errors()
    if not errors:
        return "--"
    se = stats.standard_error(errors)
    text = num(stats.mean(errors)) + ("" if se is None else rf" $\pm$ {num(se)}")
    return rf"{text} \scriptsize{{({len(errors)})}}"


def dataset_table(rows: Sequence[Row]) -> list[str]:
    models = sorted(dict.fromkeys(r.model for r in rows), key=_model_order)
    labels = list(dict.fromkeys(r.label for r in rows))  # rows come in the documented order
    by = {(r.label, r.model): r for r in rows}
    smoke = " SMOKE RUN: these numbers mean nothing." if any(map(is_smoke, rows)) else ""
    recipe = tex(recipe_caption(rows))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex(rows[0].dataset)}: final-epoch top-1 error (\%), mean $\pm$ standard "
        rf"error over seeds (number of seeds). {recipe}{smoke}}}",
        r"\begin{tabular}{l" + "c" * len(models) + "}",
        r"\toprule",
        "Method & " + " & ".join(tex(m) for m in models) + r" \\",
        r"\midrule",
    ]
    for label in labels:
        cells = [cell(by[(label, m)]) if (label, m) in by else "--" for m in models]
        lines.append(tex(label) + " & " + " & ".join(cells) + r" \\")
    return [*lines, r"\bottomrule", r"\end{tabular}", r"\end{table}"]


def recipe_caption(rows: Sequence[Row]) -> str:
    """`Recipe: 240 epochs, batch 128, ... Schedules: sd, cyclic: 4 cosine cycles x 60 ep;
    cosine, ls: 1 cosine cycle x 240 ep.` A table printed in a paper carries what each row
    trained with, as the markdown's recipe line and column do."""
    shared = shared_settings(rows)
    said = shared_text(shared)
    groups: dict[str, list[str]] = {}
    for row in rows:
        labels = groups.setdefault(recipe_of(row, shared).removesuffix(", SMOKE"), [])
        if row.label not in labels:
            labels.append(row.label)
    schedules = "; ".join(f"{', '.join(labels)}: {what}" for what, labels in groups.items())
    return f"Recipe: {said or 'no setting shared by all rows'}. Schedules: {schedules}."


def results_tex(rows: Sequence[Row]) -> str:
    """Every data set's table, one after the other."""
    out = ["% sdrun-report: final-epoch top-1 error (%), mean +- SE (n seeds); needs booktabs"]
    for dataset in dict.fromkeys(r.dataset for r in rows):
        out += ["", *dataset_table([r for r in rows if r.dataset == dataset])]
    return "\n".join(out) + "\n"
