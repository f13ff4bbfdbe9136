"""What the one-run self-distillation methods (ls, tfkd, pskd, ...; docs/SELFKD.md) share: no
teacher model, the cosine schedule they are compared on as their default (`distill=ls` alone
runs that recipe; `schedule=` still chooses another), and a report label that names the
schedule when it is not that baseline."""

from __future__ import annotations

from sdrun.methods.base import Method


class SelfDistillation(Method):
    """A method that teaches the student with itself or with a fixed target (no teacher)."""

    schedule = "cosine"

    @classmethod
    def label(cls, schedule: str) -> str:
        return cls.name if schedule == "cosine" else f"{cls.name}-{schedule}"
