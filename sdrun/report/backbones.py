"""Which backbone a transfer run fine-tuned: its pre-training recipe and its pre-training seed.

A transfer run's summary names its backbone's checkpoint (`backbone/source`). When that
checkpoint sits in an sdrun run directory, the recipe is that run's identity (the settings its
method reads, how it ran, its teacher's recipe: `Run.signature`), with its method and which
checkpoint was used (`last.pt`, or a cycle's snapshot): SD with T=2 and SD with T=4 are
different recipes, and backbones of one recipe with different pre-training seeds are samples of
it. When the run directory is gone, the recipe cannot be known: the checkpoint itself is the
recipe (one row per backbone, never merged on a guess). timm and scratch backbones have no
pre-training seed: their name is their recipe.

The report reads the source run's YAML and JSON as data (safe_load, json), like a teacher run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sdrun.report.runs import CONFIG, Run, link_teachers, load_run
from sdrun.runfolder.checkpoint import run_dir_of


@dataclass(frozen=True)
class Backbone:
    label: str  # `sd (cifar100)`, `timm`, ...: how it was pre-trained, in words
    method: str  # sd, cosine, ..., timm, scratch
    recipe: tuple  # sorted (key, value) pairs: equal recipes share a row
    seed: Any  # the pre-training seed (None for timm / scratch)
    source: str  # the checkpoint (or timm:/scratch: name) fine-tuned: one backbone
    note: Optional[str] = None  # why the recipe is only the checkpoint's path


class Backbones:
    """Backbone identities of transfer runs, reading each source run directory once."""

    def __init__(self) -> None:
        self._runs: dict[Path, Run] = {}

    def of(self, run: Run) -> Backbone:
        s = run.summary
        method = str(s.get("backbone/method", "?"))
        data = s.get("backbone/dataset")
        label = f"{method} ({data})" if data else method
        source = str(s.get("backbone/source", "?"))
        if s.get("backbone/kind") in ("timm", "scratch"):
            return Backbone(label, method, (("source", source),), None, source)
        found = self._source_run(source)
        if found is None:
            why = f"backbone run of {source} not found: its recipe is unknown, one row per backbone"
            recipe = (("method", method), ("dataset", str(data)), ("source", source))
            return Backbone(label, method, recipe, s.get("backbone/seed"), source, why)
        checkpoint = Path(source).name if Path(source).is_file() else "last.pt"
        identity = {"method": method, **found.signature(), "checkpoint": checkpoint}
        recipe = tuple(sorted((k, str(v)) for k, v in identity.items()))
        seed = found.seed if found.seed is not None else s.get("backbone/seed")
        return Backbone(label, method, recipe, seed, source)

    def _source_run(self, source: str) -> Optional[Run]:
        """The sdrun run directory holding the checkpoint, read once; None if there is none."""
        path = Path(source)
        if not path.is_absolute() or not path.exists():
            return None
        folder = path if path.is_dir() else run_dir_of(path)
        if folder is None or not (folder / CONFIG).is_file():
            return None
        folder = folder.resolve()
        if folder not in self._runs:
            loaded = load_run(folder)
            link_teachers([loaded])  # a born-again backbone is identified by its teacher too
            self._runs[folder] = loaded
        return self._runs[folder]
