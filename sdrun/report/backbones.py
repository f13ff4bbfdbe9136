"""Which backbone a transfer run fine-tuned: its pre-training recipe and its pre-training seed.

A transfer run's summary names its backbone's checkpoint (`backbone/source`). When that
checkpoint sits in an sdrun run directory, the recipe is that run's identity (the settings its
method reads, how it ran, its teacher's recipe: `Run.signature`), with its method and which
checkpoint was used (`last.pt`, or a cycle's snapshot): SD with T=2 and SD with T=4 are
different recipes, and backbones of one recipe with different pre-training seeds are samples of
it. When the run directory is gone, the recipe cannot be known: the checkpoint itself is the
recipe (one row per backbone, never merged on a guess). timm and scratch backbones have no
pre-training seed: their name is their recipe.

The source run is one the report found in the folders it was given (scope.py), read like any
run; a backbone whose run folder lies elsewhere is not read, and its note says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sdrun.report.runs import LAST, Run
from sdrun.report.scope import Scope
from sdrun.report.teachers import CHECKPOINTS


@dataclass(frozen=True)
class Backbone:
    label: str  # `sd (cifar100)`, `timm`, ...: how it was pre-trained, in words
    method: str  # sd, cosine, ..., timm, scratch
    recipe: tuple  # sorted (key, value) pairs: equal recipes share a row
    seed: Any  # the pre-training seed (None for timm / scratch)
    source: str  # the checkpoint (or timm:/scratch: name) fine-tuned: one backbone
    note: Optional[str] = None  # why the recipe is only the checkpoint's path


class Backbones:
    """Backbone identities of transfer runs, from the run folders the report found (scope.py:
    a backbone outside the folders it was given is not read)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def of(self, run: Run) -> Backbone:
        s = run.summary
        method = str(s.get("backbone/method", "?"))
        data = s.get("backbone/dataset")
        label = f"{method} ({data})" if data else method
        source = str(s.get("backbone/source", "?"))
        if s.get("backbone/kind") in ("timm", "scratch"):
            return Backbone(label, method, (("source", source),), None, source)
        found, checkpoint, why = self._source_run(source)
        if found is None:
            why = f"backbone run of {source} {why}: its recipe is unknown, one row per backbone"
            recipe = (("method", method), ("dataset", str(data)), ("source", source))
            return Backbone(label, method, recipe, s.get("backbone/seed"), source, why)
        identity = {"method": method, **found.signature(), "checkpoint": checkpoint}
        recipe = tuple(sorted((k, str(v)) for k, v in identity.items()))
        seed = found.seed if found.seed is not None else s.get("backbone/seed")
        return Backbone(label, method, recipe, seed, source)

    def _source_run(self, source: str) -> tuple[Optional[Run], str, str]:
        """(the run folder holding the checkpoint, which checkpoint, why there is none)."""
        path = Path(source)
        where = self.scope.within(path) if path.is_absolute() else None
        if where is None:
            outside = "is outside the folders given to sdrun-report (give its folder too)"
            return None, "", outside if path.is_absolute() else "not found"
        found = self.scope.run_at(where)
        if found is not None:
            return found, LAST, ""
        if where.parent.name == CHECKPOINTS:
            found = self.scope.run_at(where.parent.parent)
        return found, where.name, "not found"
