"""A checkpoint's progress, checked before a run continues from it or reports from it.

A resumed run trains the epochs after `progress.epoch` and reports from `progress`: the last
evaluated epoch's metrics (`history`) and the best epochs; resuming a complete run trains
nothing and writes its summary from them. A checkpoint from elsewhere could so make a run train
epochs that do not exist (`epoch=-3` trains -2..E and calls itself complete) or report any
accuracy. What is checked, and why it is what can be:

- types and ranges: each entry has the type of its `Progress` field; `epoch` counts the epochs
  done, 0..E of this run's schedule; seconds are finite and >= 0; accuracies are percentages,
  or -1 with epoch 0 for "none yet"; every number in `history` is finite.
- consistency inside the checkpoint: `epoch` is `progress.epoch`; `history` is the record of
  the last epoch that was evaluated (every epoch in sdrun, every `schedule.eval_every`-th and
  the last in sdrun-transfer), empty before it; the best top-1 is at least that record's and
  its epoch one of those done; the scheduler's step is the epochs done times the steps per
  epoch plus the batches of a partial epoch (`plan_problem`, once the data's size is known).
- consistency with the run folder: where the checkpoint sits in a run folder whose
  metrics.jsonl holds one line for each epoch done, `history` must equal its epoch's line and
  the best epochs must be those the lines give (`metrics_problem`).

A folder whose checkpoint and metrics.jsonl were forged together passes: its numbers are then
its sender's word, as any shared results are (the signature of an own folder covers its
settings only, trust/signing.py). What it cannot do is make a run train what no schedule has.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Optional

from torch import Tensor

from sdrun.trust.schema_types import config_problem

SECONDS = ("train_seconds", "wall_seconds", "process_seconds", "lost_wall_seconds",
           "lost_process_seconds")  # fmt: skip
NONE_YET = -1.0  # Progress's best accuracies before any epoch
# History keys that hold percentages: accuracies, agreement, sdrun-transfer's test scores.
PERCENT = re.compile(r"(top[15]|agreement)$|^test/")
WANDB_ID = re.compile(r"[\w-]{1,128}")


def progress_problem(
    payload: Mapping[str, Any], schema: type, config: Mapping[str, Any]
) -> Optional[str]:
    """Why the checkpoint's `progress` (of `schema`, the Progress dataclass) cannot be this
    run's, or None; `config`: the checkpoint's config (already checked against the run's)."""
    progress = payload["progress"]
    problem = config_problem(schema, progress, "progress.")
    if problem:
        return problem
    epoch, epochs = progress.get("epoch"), _schedule(config, "epochs", None)
    if epoch != payload["epoch"]:
        return f"progress.epoch={epoch!r} but epoch={payload['epoch']!r}"
    if epoch < 0 or (isinstance(epochs, int) and epoch > epochs):
        return f"progress.epoch={epoch} is not a number of epochs done of this run's {epochs}"
    return (
        _numbers_problem(progress)
        or _best_problem(progress)
        or _history_problem(progress, config)
        or _tally_problem(payload.get("epoch_tally"))
    )


def _schedule(config: Mapping[str, Any], key: str, default: Any) -> Any:
    schedule = config.get("schedule")
    return schedule.get(key, default) if isinstance(schedule, Mapping) else default


def _numbers_problem(progress: Mapping[str, Any]) -> Optional[str]:
    for key, value in progress.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"progress.{key}={value} is not a finite number"
        if key in SECONDS and value is not None and value < 0:
            return f"progress.{key}={value} is negative"
    wandb_id = progress.get("wandb_id")
    if wandb_id is not None and not WANDB_ID.fullmatch(wandb_id):
        return f"progress.wandb_id={wandb_id[:40]!r} is not a wandb run id"
    return None


def _best_problem(progress: Mapping[str, Any]) -> Optional[str]:
    """The best epochs: none yet (-1 at epoch 0), or a percentage at an epoch done."""
    epoch = progress.get("epoch", 0)
    pairs = (("best_top1", "best_epoch"), ("val_best_top1", "val_best_epoch"))
    for top1, at in pairs:
        value, when = progress.get(top1, NONE_YET), progress.get(at, 0)
        if when == 0 and value == NONE_YET:
            continue
        if not (0 <= value <= 100 and 1 <= when <= epoch):
            return f"progress.{top1}={value} at {at}={when} is no epoch's accuracy of {epoch} done"
    at_val = progress.get("top1_at_val_best")
    if (at_val is None) != (progress.get("val_best_epoch", 0) == 0) or not (
        at_val is None or 0 <= at_val <= 100
    ):
        return f"progress.top1_at_val_best={at_val} does not go with the validation's best epoch"
    return None


def evaluated_epoch(epoch: int, config: Mapping[str, Any]) -> int:
    """The last epoch up to `epoch` whose record is the history: every `schedule.eval_every`-th
    epoch (1 when the schedule has none: every epoch) and the schedule's last; 0 for none."""
    every, epochs = _schedule(config, "eval_every", 1), _schedule(config, "epochs", None)
    if epoch == epochs or not isinstance(every, int) or every < 1:
        return epoch
    return epoch - epoch % every


def _history_problem(progress: Mapping[str, Any], config: Mapping[str, Any]) -> Optional[str]:
    history, epoch = progress.get("history", {}), progress.get("epoch", 0)
    wanted = evaluated_epoch(epoch, config)
    if not history and not wanted:
        return None
    if history.get("epoch") != wanted:
        return f"progress.history is the record of epoch {history.get('epoch')!r}, not {wanted}"
    for key, value in history.items():
        problem = _metric_problem(key, value)
        if problem:
            return f"progress.history['{key}'] {problem}"
    top1 = history.get("student/top1")
    best = progress.get("best_top1", NONE_YET)
    if isinstance(top1, (int, float)) and top1 > best:
        return f"progress.history's student/top1={top1} beats progress.best_top1={best}"
    return None


def _metric_problem(key: str, value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return None
    if key == "per_class":  # sdrun-transfer's scores by class: NaN for a class never seen
        items = value.values() if isinstance(value, Mapping) else value
        if not isinstance(items, (list, tuple)) and not isinstance(value, Mapping):
            return f"is a {type(value).__name__}, not scores by class"
        bad = [v for v in items if not _percent_or_none(v)]
        return f"holds {bad[0]!r}, not a percentage" if bad else None
    if not isinstance(value, (int, float)):
        return f"is a {type(value).__name__}, not a number"
    if not math.isfinite(value):
        return f"is {value}, not a finite number"
    if PERCENT.search(key) and not 0 <= value <= 100:
        return f"is {value}, not a percentage"
    return None


def _percent_or_none(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return math.isnan(value) or 0 <= value <= 100


def metrics_problem(progress: Mapping[str, Any], rows: list[dict[str, Any]]) -> Optional[str]:
    """Why the checkpoint's history or best epochs disagree with its run folder's metrics.jsonl
    lines (`rows`), or None; lines after the checkpoint's epoch (a session killed before its
    checkpoint landed) do not count, and a file without one line per epoch done is not used."""
    epoch = progress.get("epoch", 0)
    done = [r for r in rows if isinstance(r.get("epoch"), int) and 1 <= r["epoch"] <= epoch]
    if sorted(r["epoch"] for r in done) != list(range(1, epoch + 1)):
        return None
    by_epoch = {r["epoch"]: r for r in done}
    history = progress.get("history") or {}
    row = by_epoch.get(history.get("epoch"), {})
    for key in sorted(set(history) & set(row)):
        if _json(history[key]) != row[key]:
            return f"progress.history['{key}']={history[key]!r} but metrics.jsonl says {row[key]!r}"
    pairs = (("student/top1", "best_top1", "best_epoch"), ("val/top1", "val_best_top1",
             "val_best_epoch"))  # fmt: skip
    for key, top1, at in pairs:
        best = _best(done, key)
        if best is not None and best != (progress.get(top1), progress.get(at)):
            return (f"progress.{top1}={progress.get(top1)} at {at}={progress.get(at)} but "
                    f"metrics.jsonl's best {key} is {best[0]} at epoch {best[1]}")  # fmt: skip
    return None


def _best(rows: list[dict[str, Any]], key: str) -> Optional[tuple[float, int]]:
    """The first epoch's best value of `key` over `rows` (as Progress counts it), or None
    where some line lacks a number for it."""
    values = [(r["epoch"], r.get(key)) for r in sorted(rows, key=lambda r: r["epoch"])]
    if not values or not all(isinstance(v, (int, float)) for _, v in values):
        return None
    best = max(v for _, v in values)
    return best, next(e for e, v in values if v == best)


def _json(value: Any) -> Any:
    """A value as metrics.jsonl holds it (NaN and infinity are written as null)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _tally_problem(tally: Any) -> Optional[str]:
    """A partial epoch's tally (None: the checkpoint is at an epoch's end)."""
    if tally is None:
        return None
    counts = [tally.get(k) for k in ("batches", "images")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return f"epoch_tally's batches and images {counts} are not counts"
    seconds = tally.get("seconds")
    if not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        return f"epoch_tally.seconds={seconds!r} is not a duration"
    sums = tally.get("sums")
    if sums is not None and not (isinstance(sums, Tensor) and sums.dim() == 1
                                 and sums.is_floating_point()):  # fmt: skip
        return "epoch_tally.sums is not a vector of running sums"
    return None


def plan_problem(payload: Mapping[str, Any], epochs: int, steps_per_epoch: int) -> Optional[str]:
    """Why the checkpoint's epoch and step are no point of this run's schedule (`epochs` of
    `steps_per_epoch`), or None. A partial epoch holds 0 <= batches < steps_per_epoch."""
    epoch, step = payload["epoch"], payload["scheduler"]["step"]
    if not 0 <= epoch <= epochs:
        return f"epoch={epoch} is not a number of epochs done of this run's {epochs}"
    tally = payload.get("epoch_tally") or {}
    batches = tally.get("batches", 0)
    if (
        not isinstance(batches, int)
        or isinstance(batches, bool)
        or not (0 <= batches < steps_per_epoch and (batches == 0 or epoch < epochs))
    ):
        return f"epoch_tally.batches={batches!r} is not a partial epoch of {steps_per_epoch} steps"
    if step != epoch * steps_per_epoch + batches:
        return (f"scheduler.step={step} but {epoch} epoch(s) of {steps_per_epoch} steps and "
                f"{batches} batch(es) were done")  # fmt: skip
    return None
