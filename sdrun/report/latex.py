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
from sdrun.report.recipe import is_smoke
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
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex(rows[0].dataset)}: final-epoch top-1 error (\%), mean $\pm$ standard "
        rf"error over seeds (number of seeds).{smoke}}}",
        r"\begin{tabular}{l" + "c" * len(models) + "}",
        r"\toprule",
        "Method & " + " & ".join(tex(m) for m in models) + r" \\",
        r"\midrule",
    ]
    for label in labels:
        cells = [cell(by[(label, m)]) if (label, m) in by else "--" for m in models]
        lines.append(tex(label) + " & " + " & ".join(cells) + r" \\")
    return [*lines, r"\bottomrule", r"\end{tabular}", r"\end{table}"]


def results_tex(rows: Sequence[Row]) -> str:
    """Every data set's table, one after the other."""
    out = ["% sdrun-report: final-epoch top-1 error (%), mean +- SE (n seeds); needs booktabs"]
    for dataset in dict.fromkeys(r.dataset for r in rows):
        out += ["", *dataset_table([r for r in rows if r.dataset == dataset])]
    return "\n".join(out) + "\n"
