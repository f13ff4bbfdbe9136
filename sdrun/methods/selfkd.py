"""What the one-run self-distillation methods (ls, tfkd, pskd, ...; docs/SELFKD.md) share: no
teacher model, and a report label that names the schedule when it is not the cosine baseline
they are compared with."""

from __future__ import annotations

from sdrun.methods.base import Method


class SelfDistillation(Method):
    """A method that teaches the student with itself or with a fixed target (no teacher)."""

    @classmethod
    def label(cls, schedule: str) -> str:
        return cls.name if schedule == "cosine" else f"{cls.name}-{schedule}"
