"""What a checkpoint given to `resume=` must hold before anything is restored from it.

A checkpoint may come from elsewhere (a copied run folder, a file someone edited): one that
lacks an entry `run_state.restore` reads, holds another type there, or nests deeper than any
sdrun writes is refused in one line before the run builds anything, not with a traceback
halfway through restoring (or a RecursionError comparing its config). So is one holding a
tensor that is not a plain dense CPU tensor (trust/tensors.py: checked from its metadata, before
anything reads it), a config value not of the schema's type, progress no run of this schedule
makes (progress_checks.py), or NaN in its weights, optimizer or method state (a checkpoint's
fault, not the method diverging). Once the run's parts are built, `check_fits` compares each
state with the live object's own (keys, shapes, dtypes) before any is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from sdrun.errors import CheckpointError
from sdrun.runfolder.progress_checks import metrics_problem, plan_problem, progress_problem
from sdrun.trust.schema_types import config_problem
from sdrun.trust.tensors import (
    nonfinite_entry,
    optimizer_problem,
    state_problem,
    tree_problem,
)

# What `restore` reads, and the type each entry must have. A checkpoint may come from
# elsewhere: one that lacks an entry or holds another type is refused before anything is built,
# in one line, not with a traceback halfway through restoring.
PAYLOAD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (dict,),
    "teacher": (dict, type(None)),
    "optimizer": (dict,),
    "scheduler": (dict,),
    "epoch": (int,),
    "epoch_tally": (dict, type(None)),
    "progress": (dict,),
    "rng": (dict,),
    "config": (dict,),
    "method": (dict, type(None)),  # the training method's own state (sdrun/methods/)
}
MAX_DEPTH = 32  # sdrun's checkpoints nest 6 deep; deeper ones would exhaust the recursion limit


# Entries whose tensors sdrun saves finite (a partial epoch's loss sums may hold an fp16
# overflow, and the RNG states are bytes).
FINITE = ("model", "teacher", "optimizer", "method")


def malformed(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"resume: {path} is malformed ({what}); it was not written by sdrun, or it was "
        "edited: use another checkpoint"
    )


def check_payload(payload: dict[str, Any], path: Path, progress_keys: set[str]) -> None:
    """Refuse a checkpoint whose entries `restore` cannot take (CheckpointError);
    `progress_keys`: the fields of run_state.Progress (restore sets each entry it finds)."""
    _check_structure(payload, path, progress_keys)
    problem = tree_problem(payload, "")
    if problem:
        raise malformed(path, problem)


def _check_structure(payload: dict[str, Any], path: Path, progress_keys: set[str]) -> None:
    if _too_deep(payload, MAX_DEPTH):
        raise malformed(path, f"nested more than {MAX_DEPTH} levels deep")
    for key, kinds in PAYLOAD_TYPES.items():
        if key not in payload and type(None) not in kinds:
            raise malformed(path, f"no '{key}' entry")
        value = payload.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise malformed(path, f"'{key}' is a {type(value).__name__}")
    unknown = sorted(map(str, set(payload["progress"]) - progress_keys))
    if unknown:
        raise malformed(path, f"'progress' has unknown entries {', '.join(unknown)}")
    rng = payload["rng"]
    if not isinstance(rng.get("python"), (tuple, list)) or not isinstance(
        rng.get("torch"), torch.Tensor
    ):
        raise malformed(path, "'rng' lacks the python or torch generator state")
    if not isinstance(payload["scheduler"].get("step"), int):
        raise malformed(path, "'scheduler' has no step count")


def check_config(payload: dict[str, Any], path: Path, schema: Optional[type]) -> None:
    """Refuse a checkpoint whose config holds a value not of `schema`'s type (a bool or the
    string "4" where an int goes): compared with the run's config, it would pass for equal."""
    problem = None if schema is None else config_problem(schema, payload["config"], "config.")
    if problem:
        raise malformed(path, problem)


def check_progress(
    payload: dict[str, Any], path: Path, progress: type, rows: Optional[list[dict[str, Any]]]
) -> None:
    """Refuse a checkpoint whose progress no run of its schedule makes, whose stored tensors
    hold NaN or infinity, or whose results disagree with its run folder's metrics.jsonl lines
    (`rows`; None: not in a run folder). Call after `check_same_run`: the checkpoint's schedule
    is then the run's."""
    problem = progress_problem(payload, progress, payload["config"])
    if problem:
        raise malformed(path, problem)
    for key in FINITE:
        entry = nonfinite_entry(payload.get(key), key)
        if entry:
            raise CheckpointError(
                f"resume: {path} holds NaN or infinite values in '{entry}': it is damaged or "
                "was edited (or caught its run diverging); resume from another checkpoint of "
                "the run (checkpoints/prev.pt) or start a new run"
            )
    problem = None if rows is None else metrics_problem(payload["progress"], rows)
    if problem:
        raise CheckpointError(
            f"resume: {path} does not agree with its run folder ({problem}); the checkpoint or "
            "metrics.jsonl was edited: use an unedited copy of the run"
        )


def check_fits(
    payload: dict[str, Any],
    path: Path,
    model_state: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    plan: Any,  # a CyclePlan or FinetunePlan: epochs, steps_per_epoch
    method_state: Mapping[str, Any],
) -> None:
    """Refuse a checkpoint whose states do not fit the run's live objects (their own
    `state_dict()`s: keys, shapes, dtypes) or whose step is no point of its schedule, before
    any is loaded. The method's state is compared on the entries it has now (dlb's kept logits
    appear after a step) and only when the checkpoint holds one (the method decides then)."""
    teacher, method = payload.get("teacher"), payload.get("method") or {}
    problem = (
        state_problem(payload["model"], model_state, "model")
        or (None if teacher is None else state_problem(teacher, model_state, "teacher"))
        or optimizer_problem(payload["optimizer"], optimizer)
        or (None if not method else state_problem(method, method_state, "method", exact=False))
        or plan_problem(payload, plan.epochs, plan.steps_per_epoch)
    )
    if problem:
        raise CheckpointError(
            f"resume: {path} does not fit this run ({problem}); it was not written by sdrun "
            "for this config, or it was edited: use another checkpoint"
        )


def _too_deep(tree: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` levels (iterative: safe on any depth)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
    return False
