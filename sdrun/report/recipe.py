"""What each row's training was, in words: its schedule and epochs (a *recipe* column), the
settings every row of a table shares (a line above it), and whether a row is a smoke run.

SD and cyclic run 4 cosine cycles of 60 epochs, the self-distillation methods one cosine cycle
of 240, `step` decays at fixed epochs: two rows can have the same epochs and still differ in
what they trained, and a tfkd row at 200 epochs would look like the others without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sdrun.report.table import Row

SMOKE_EPOCHS = 10  # fewer epochs than any recipe trains: a check of the pipeline
# Settings shared by a table's rows, in the order the line above it names them.
SHARED = {
    "schedule.epochs": ("epochs", "{} epochs"),
    "dataset.batch_size": ("batch", "batch {}"),
    "optim.name": ("optimizer", "{}"),
    "optim.lr": ("lr", "lr {}"),
    "optim.momentum": ("momentum", "momentum {}"),
    "optim.weight_decay": ("weight decay", "weight decay {}"),
    "optim.nesterov": ("nesterov", "nesterov {}"),
    "schedule.warmup_epochs": ("warm-up", "warm-up {} epochs"),
}


def schedule_of(sig: Mapping[str, Any]) -> str:
    """`4 cosine cycles x 60 ep`, `1 cosine cycle x 240 ep`, `step 240 ep (x0.1 at 150, 180,
    210)`: the LR schedule as it ran."""
    name, epochs = sig.get("schedule.name"), sig.get("schedule.epochs")
    length = sig.get("schedule.cycle_length")
    if name == "sd" and isinstance(epochs, int) and isinstance(length, int) and length > 0:
        cycles = epochs // length
        return f"{cycles} cosine cycle{'s' if cycles > 1 else ''} x {length} ep"
    if name == "cosine":
        return f"1 cosine cycle x {epochs} ep"
    if name == "step":
        at = sig.get("schedule.milestones") or ()
        when = ", ".join(_epoch(f, epochs) for f in at)
        return f"step {epochs} ep (x{sig.get('schedule.gamma')} at {when})"
    return f"{name} {epochs} ep"


def _epoch(fraction: Any, epochs: Any) -> str:
    if isinstance(fraction, (int, float)) and isinstance(epochs, int):
        return f"{round(fraction * epochs)}"
    return str(fraction)


def recipe_of(row: Row, shared: Mapping[str, Any]) -> str:
    """The row's schedule, and each shared-line setting in which it differs from the table."""
    sig = row.signature
    parts = [schedule_of(sig)]
    for key, (_, form) in SHARED.items():
        if key in sig and key not in shared and key != "schedule.epochs":
            parts.append(form.format(sig[key]))
    if is_smoke(row):
        parts.append("SMOKE")
    return ", ".join(parts)


def shared_settings(rows: Sequence[Row]) -> dict[str, Any]:
    """The SHARED settings that every row of `rows` has, with one value."""
    out = {}
    for key in SHARED:
        values = {repr(r.signature.get(key, "?")) for r in rows}
        if len(values) == 1 and key in rows[0].signature:
            out[key] = rows[0].signature[key]
    return out


def shared_text(shared: Mapping[str, Any]) -> str:
    """`240 epochs, batch 128, sgd, lr 0.1, ...`: the settings `shared_settings` found."""
    return ", ".join(SHARED[key][1].format(value) for key, value in shared.items())


def shared_line(rows: Sequence[Row]) -> str:
    """`Recipe of every row: 240 epochs, batch 128, sgd, lr 0.1, ...; the schedule of each
    row is in its *recipe* column.`"""
    shared = shared_settings(rows)
    said = shared_text(shared)
    rest = [name for k, (name, _) in SHARED.items()
            if k not in shared and any(k in r.signature for r in rows)]  # fmt: skip
    line = f"Recipe of every row: {said or 'no setting shared by all'}"
    if rest:
        line += f"; differing by row: {', '.join(rest)}"
    return line + ". The *recipe* column gives each row's schedule (and what differs)."


def is_smoke(row: Row) -> bool:
    """A row trained for fewer than SMOKE_EPOCHS epochs or on a subset of the data."""
    sig = row.signature
    epochs = sig.get("schedule.epochs")
    short = isinstance(epochs, int) and epochs < SMOKE_EPOCHS
    return short or sig.get("dataset.limit_train") is not None or (
        sig.get("dataset.limit_test") is not None)  # fmt: skip
