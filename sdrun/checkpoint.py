"""Checkpoints: atomic writes, and finding the one to resume from.

`checkpoints/last.pt` is written at every epoch end to a temporary file in the same folder,
flushed to disk and renamed over the old one, so a kill at any moment leaves either the old
or the new checkpoint, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sdrun.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut could otherwise lose it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU; a missing or unreadable file is a one-line error."""
    if not path.is_file():
        raise CheckpointError(
            f"resume: no checkpoint at {path}; point resume at a run directory or a .pt file"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"resume: {path} is not a readable checkpoint ({type(err).__name__}); "
            "it may be truncated: resume from another checkpoint"
        ) from None
    missing = [k for k in ("model", "optimizer", "epoch", "config") if k not in payload]
    if missing:
        raise CheckpointError(
            f"resume: {path} lacks {', '.join(missing)}; it was not written by sdrun"
        )
    return payload


def checkpoint_path(resume: str) -> Path:
    """The checkpoint that `resume=` names: a .pt file, or a run directory's last.pt."""
    path = Path(resume).expanduser()
    if path.is_dir():
        return path / CHECKPOINT_DIR / LAST
    return path


def guard_run_dir(run_dir: Path, resuming: bool) -> None:
    """Never train over another run's checkpoints."""
    if (run_dir / CHECKPOINT_DIR / LAST).exists() and not resuming:
        raise CheckpointError(
            f"{run_dir} already holds a run's checkpoint; pass resume={run_dir} to continue it, "
            "or choose another hydra.run.dir"
        )


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory that holds `checkpoint`, if it sits in one's checkpoints/ folder."""
    checkpoint = checkpoint.resolve()
    if checkpoint.parent.name == CHECKPOINT_DIR and (checkpoint.parent.parent / ".hydra").is_dir():
        return checkpoint.parent.parent
    return None
