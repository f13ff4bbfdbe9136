"""What the report needs to know of each training method, without importing it.

The methods (sdrun/methods/) are torch modules, and importing torch is most of a report's time
(3 s of 7 for 1,000 runs). The report reads three things of a method, which this table holds
as the registry's classes declare them (tests/test_report_speed.py checks that they are equal
for every registered method, so the two cannot drift apart):

- `teacher`: SNAPSHOT (the student at each cycle end teaches), FILE (a saved model, kd) or None;
- `reads`: the distill.* keys its numbers depend on (a row's identity: identity.py);
- `label(schedule)`: what the report calls its rows (sd, cyclic, cosine, pskd, pskd-step, ...).

A method this table lacks (a run folder of a newer sdrun) is unknown: it reads every key and is
labelled by its name, as the registry treats a method it lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

SNAPSHOT = "snapshot"  # sdrun.methods.base.SNAPSHOT
FILE = "file"  # sdrun.methods.base.FILE
LOSS_KEYS = ("distill.temperature", "distill.ce_weight", "distill.kd_weight", "distill.smooth")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    teacher: Optional[str]
    reads: tuple[str, ...]
    labels: Callable[[str], str]

    def label(self, schedule: str) -> str:
        return self.labels(schedule)


def _on(home: str, name: str) -> Callable[[str], str]:
    """`name` on its own schedule, `name-<schedule>` on another."""
    return lambda schedule: name if schedule == home else f"{name}-{schedule}"


def _selfkd(name: str, reads: tuple[str, ...]) -> MethodInfo:
    """The one-run self-distillation methods: their own recipe is one cosine cycle."""
    return MethodInfo(name, None, reads, _on("cosine", name))


CATALOG: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo("none", None, (), lambda s: "cyclic" if s == "sd" else s),
        MethodInfo("sd", SNAPSHOT, LOSS_KEYS, _on("sd", "sd")),
        MethodInfo("kd", FILE, (*LOSS_KEYS, "distill.teacher_checkpoint"), lambda s: "kd"),
        _selfkd("ls", ("distill.eps",)),
        _selfkd(
            "tfkd",
            ("distill.alpha", "distill.temperature", "distill.multiplier", "distill.correct_prob"),
        ),  # fmt: skip
        _selfkd("cskd", ("distill.temperature", "distill.kd_weight")),
        _selfkd("pskd", ("distill.alpha_T",)),
        _selfkd("dlb", ("distill.temperature", "distill.kd_weight")),
        _selfkd("byot", ("distill.alpha", "distill.temperature", "distill.feature_weight")),
    )
}


def find_method(name: object) -> Optional[MethodInfo]:
    """The method called `name`, or None (a method this sdrun lacks)."""
    return CATALOG.get(name) if isinstance(name, str) else None


def method_label(name: object, schedule: object) -> str:
    """A run's method as the report names it; an unknown method's name as it is."""
    method = find_method(name)
    return str(name) if method is None else method.label(str(schedule))
