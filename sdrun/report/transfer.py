"""The transfer table's rows: fine-tuning results of `sdrun-transfer` runs by backbone
pre-training recipe x task, and SD's gain over each other backbone.

A transfer run is a run directory whose config has `task.name` and `backbone` (its summary
then holds `backbone/*`). Complete runs are grouped by task, backbone network, the backbone's
pre-training recipe (backbones.py: the source run's method and settings, e.g. SD's T; not its
seed) and every fine-tuning setting but the seed. A row holds every run of its recipe: each
backbone (pre-training seed) with each of its fine-tuning seeds. Only a backbone fine-tuned
twice with one seed keeps its newest run, and the other is listed.

What a row's statistics are over (`TransferRow.samples`): with 2 or more backbones, the mean
of each backbone's fine-tuning runs, one sample per backbone - the pre-training seed is what
varies between recipes' samples, and fine-tuning runs of one backbone are not independent
draws of its recipe; with one backbone (timm, scratch, or a single pre-training seed), its
fine-tuning runs, and the spread is then the fine-tuning's alone. Mean ± SE with a t-based
95 % interval, as in the main table; n says what it counts.

SD's gain over another backbone (transfer_gains.py: same task, network and fine-tuning
settings, and the same backbone recipe apart from the method) uses
`sdrun.report.stats.difference` on those samples: paired on the pre-training seed (or the
fine-tuning seed, for rows of one backbone) under the main table's rule, else Welch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from sdrun.report.backbones import Backbone, Backbones
from sdrun.report.run_files import shorten
from sdrun.report.runs import SUMMARY, Run
from sdrun.report.scope import Scope
from sdrun.report.stats import Difference, difference

METRICS = {"detection": "test/map50", "segmentation": "test/miou"}
METRIC_NAMES = {"detection": "mAP50 (VOC07 11-pt)", "segmentation": "mIoU"}
SD = "sd"
# Config keys that say how a backbone was fine-tuned; paths and loader settings do not.
RECIPE = ("task.", "dataset.", "schedule.", "optim.")
NOT_RECIPE = {"dataset.root", "dataset.download", "dataset.num_workers", "dataset.eval_batch_size"}
BACKBONE_UNIT, RUN_UNIT = "backbones", "fine-tuning runs (one backbone)"


def is_transfer(run: Run) -> bool:
    return "task.name" in run.config and "backbone" in run.config


def split_runs(runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """(sdrun runs, transfer runs)."""
    transfer = [r for r in runs if is_transfer(r)]
    return [r for r in runs if not is_transfer(r)], transfer


def problem(run: Run) -> Optional[str]:
    """Why a transfer run cannot be averaged (None: it can). Judged from its summary alone:
    the report's own completeness check looks for classification keys."""
    if not run.summary:
        return run.problem or f"no {SUMMARY} (killed, failed or still running)"
    if run.summary.get("complete") is not True:
        return f"incomplete: {SUMMARY} says complete={run.summary.get('complete')}"
    task = str(run.config.get("task.name"))
    metric = METRICS.get(task)
    value = None if metric is None else run.summary.get(metric)
    if value is None:
        return f"{SUMMARY} has no {metric or 'metric for task ' + task}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{SUMMARY}: {metric} is {shorten(repr(value))}, not a finite number"
    return None


def recipe(run: Run) -> tuple:
    keys = {k: v for k, v in run.config.items() if k.startswith(RECIPE) and k not in NOT_RECIPE}
    keys["data/train"] = run.summary.get("data/train")  # SBD used or not
    return tuple(sorted((k, str(v)) for k, v in keys.items()))


@dataclass
class TransferRow:
    task: str
    model: str
    method: str  # the backbone's pre-training method (sd, cosine, ..., timm, scratch)
    pretraining: str  # method with its data set
    recipe: tuple  # fine-tuning settings
    runs: list[Run] = field(default_factory=list)
    variant: str = ""
    backbone_recipe: tuple = ()
    backbones: dict[Any, Backbone] = field(default_factory=dict)  # run path -> its backbone

    @property
    def metric(self) -> str:
        return METRICS[self.task]

    def value(self, run: Run) -> float:
        return float(run.summary[self.metric])

    def by_backbone(self) -> dict[str, list[Run]]:
        """The runs of each backbone (checkpoint), in run order."""
        out: dict[str, list[Run]] = {}
        for run in self.runs:
            out.setdefault(self._backbone(run).source, []).append(run)
        return out

    def _backbone(self, run: Run) -> Backbone:
        found = self.backbones.get(run.path)
        return found if found is not None else Backbone("?", "?", (), None, str(run.path))

    @property
    def unit(self) -> str:
        """What one sample is: a backbone (2 or more) or a fine-tuning run (one backbone)."""
        return BACKBONE_UNIT if len(self.by_backbone()) >= 2 else RUN_UNIT

    def samples(self) -> dict[Any, float]:
        """The values the row's statistics and gains are over (see the module docstring), keyed
        for pairing: ("backbone seed", s) or ("fine-tuning seed", s)."""
        if self.unit == RUN_UNIT:
            return {("fine-tuning seed", r.seed): self.value(r) for r in self.runs}
        groups = self.by_backbone()
        seeds = [self._backbone(runs[0]).seed for runs in groups.values()]
        unique = None not in seeds and len(set(map(str, seeds))) == len(seeds)
        return {
            ("backbone seed", seed if unique else (seed, source)): math.fsum(
                self.value(r) for r in runs
            )
            / len(runs)
            for seed, (source, runs) in zip(seeds, groups.items())
        }

    def values(self) -> list[float]:
        return list(self.samples().values())

    def design(self) -> str:
        """What n counts: `9 runs = 3 backbones x 3 fine-tuning seeds`."""
        sizes = sorted(len(runs) for runs in self.by_backbone().values())
        n, b = len(self.runs), len(sizes)
        if b == 1:
            return f"{n} run{'s' if n > 1 else ''}, one backbone"
        each = f"{sizes[0]}" if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"
        return f"{n} runs = {b} backbones x {each} fine-tuning seed{'s' if sizes[-1] > 1 else ''}"

    @property
    def label(self) -> str:
        return f"{self.pretraining} [{self.variant}]" if self.variant else self.pretraining


def newest_per_seed(runs: Sequence[Run], backbones: dict[Any, Backbone]) -> tuple[list, list]:
    """(kept, notes): one run per backbone and fine-tuning seed, the one whose summary was
    written last; every run left out is named in a note."""
    newest: dict[tuple, Run] = {}
    notes = []
    for run in sorted(runs, key=lambda r: r.summary_mtime):
        key = (backbones[run.path].source, str(run.seed))
        if key in newest:
            notes.append(
                f"{newest[key].path}: backbone {key[0]} was fine-tuned twice with seed "
                f"{run.seed}; not averaged, the newer {run.path} is"
            )
        newest[key] = run
    return sorted(newest.values(), key=lambda r: (str(backbones[r.path].seed), str(r.seed))), notes


def build_rows(runs: Sequence[Run], scope: Scope) -> tuple[list[TransferRow], list[str]]:
    """(rows, notes on runs left out of them); backbones are identified from the run folders
    in `scope`."""
    identify = Backbones(scope)
    backbones = {run.path: identify.of(run) for run in runs}
    rows: dict[tuple, TransferRow] = {}
    for run in runs:
        bb = backbones[run.path]
        task, model = str(run.config.get("task.name")), str(run.summary.get("backbone/model", "?"))
        key = (task, model, bb.label, bb.recipe, recipe(run))
        row = rows.setdefault(key, TransferRow(task, model, bb.method, bb.label, key[4],
                                               backbone_recipe=bb.recipe))  # fmt: skip
        row.runs.append(run)
        row.backbones[run.path] = bb
    notes = sorted({bb.note for bb in backbones.values() if bb.note})
    for row in rows.values():
        row.runs, dropped = newest_per_seed(row.runs, row.backbones)
        notes += dropped
    out = sorted(rows.values(), key=lambda r: (r.task, r.model, r.method != SD, r.pretraining))
    _name_variants(out)
    return out, notes


def _name_variants(rows: list[TransferRow]) -> None:
    """Rows of one task/model/pre-training that differ in the backbone's recipe or in the
    fine-tuning settings: say how (`backbone distill.temperature=2.0`)."""
    groups: dict[tuple, list[TransferRow]] = {}
    for row in rows:
        groups.setdefault((row.task, row.model, row.pretraining), []).append(row)
    for same in (g for g in groups.values() if len(g) > 1):
        dicts = [
            {**{f"backbone {k}": v for k, v in r.backbone_recipe}, **dict(r.recipe)} for r in same
        ]
        differ = sorted(k for k in set().union(*dicts) if len({d.get(k) for d in dicts}) > 1)
        for row, d in zip(same, dicts):
            row.variant = ", ".join(f"{k}={d.get(k)}" for k in differ)


def gain(sd: TransferRow, other: TransferRow) -> Difference:
    return difference(sd.samples(), other.samples())
