"""What a checkpoint given to `resume=` must hold before anything is restored from it.

A checkpoint may come from elsewhere (a copied run folder, a file someone edited): one that
lacks an entry `run_state.restore` reads, holds another type there, or nests deeper than any
sdrun writes is refused in one line before the run builds anything, not with a traceback
halfway through restoring (or a RecursionError comparing its config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdrun.errors import CheckpointError

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


def check_payload(payload: dict[str, Any], path: Path, progress_keys: set[str]) -> None:
    """Refuse a checkpoint whose entries `restore` cannot take (CheckpointError);
    `progress_keys`: the fields of run_state.Progress (restore sets each entry it finds)."""

    def malformed(what: str) -> CheckpointError:
        return CheckpointError(
            f"resume: {path} is malformed ({what}); it was not written by sdrun, or it was "
            "edited: use another checkpoint"
        )

    if _too_deep(payload, MAX_DEPTH):
        raise malformed(f"nested more than {MAX_DEPTH} levels deep")
    for key, kinds in PAYLOAD_TYPES.items():
        if key not in payload and type(None) not in kinds:
            raise malformed(f"no '{key}' entry")
        value = payload.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise malformed(f"'{key}' is a {type(value).__name__}")
    unknown = sorted(map(str, set(payload["progress"]) - progress_keys))
    if unknown:
        raise malformed(f"'progress' has unknown entries {', '.join(unknown)}")
    rng = payload["rng"]
    if not isinstance(rng.get("python"), (tuple, list)) or not isinstance(
        rng.get("torch"), torch.Tensor
    ):
        raise malformed("'rng' lacks the python or torch generator state")
    if not isinstance(payload["scheduler"].get("step"), int):
        raise malformed("'scheduler' has no step count")


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
