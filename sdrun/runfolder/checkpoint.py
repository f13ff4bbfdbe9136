"""Checkpoints: atomic writes, and finding the one to resume from.

`checkpoints/last.pt` is written at every epoch end to a temporary file in the same folder
and flushed to disk; only then does the old `last.pt` become `prev.pt` and the new file
`last.pt`. A kill at any moment leaves at least one complete checkpoint, and a damaged
`last.pt` (a disk fault, a copy cut short, a flipped bit: every record's CRC-32 is checked)
falls back to `prev.pt` with a message.
"""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any, Optional

import torch

from sdrun.errors import CheckpointError, UnsafeCheckpoint
from sdrun.trust import files

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
PREV = "prev.pt"


def save_atomic(payload: dict[str, Any], path: Path, keep_previous: Optional[Path] = None) -> None:
    """Write `payload` to `path` so that no reader ever sees a partial file.

    With `keep_previous`, the file `path` held before becomes that file, but only once the new
    one is complete on disk. A failed write (disk full, a file-size limit, permissions) removes
    the temporary file and leaves both untouched.
    """
    try:
        files.ensure_dir(path.parent)
        with files.atomic_file(path, "wb", keep_previous=keep_previous) as f:
            torch.save(payload, f)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:
        reason = _write_failure(err)
        if reason is None:
            raise  # not a write that failed: a bug, with its traceback
        raise CheckpointError(
            f"could not write {path} ({reason}); the previous checkpoint is kept; "
            "free disk space (or raise the file-size limit) or fix permissions, then resume from "
            "the run directory"
        ) from None


def _write_failure(err: BaseException) -> Optional[str]:
    """Why a write failed, or None if `err` is not a failed write. torch's zip writer reports a
    full disk or a file-size limit as a RuntimeError ("PytorchStreamWriter failed writing
    file ..."), sometimes over the OSError of the Python file it writes to."""
    seen: Optional[BaseException] = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen.strerror or str(seen)
        seen = seen.__cause__ or seen.__context__
    if "PytorchStreamWriter failed" in str(err) or "file write failed" in str(err):
        return "the write failed: the disk is full or a file-size limit was reached"
    return None


def save_last(payload: dict[str, Any], run_dir: Path) -> None:
    folder = run_dir / CHECKPOINT_DIR
    save_atomic(payload, folder / LAST, keep_previous=folder / PREV)


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


def load_weights(path: Path, key: str) -> dict[str, Any]:
    """Load a checkpoint onto the CPU without running code; `key` names the setting that gave
    `path` in the one-line errors.

    Checkpoints often come from someone else, and a pickle can name any function to call on
    load; `weights_only=True` allows tensors and plain Python values only, and anything else is
    refused, never run.
    """
    if not path.is_file():
        raise CheckpointError(
            f"{key}: no checkpoint at {path}; point {key} at a run directory or a .pt file"
        )
    try:
        with files.open_binary(path) as f:
            return _load_file(f, path, key)
    except files.UnsafeFile as err:
        raise CheckpointError(f"{key}: {err}") from None


def _load_file(f: IO[bytes], path: Path, key: str) -> dict[str, Any]:
    damage = _zip_damage(f)
    if damage:
        raise CheckpointError(f"{key}: {path} is damaged ({damage}); use another checkpoint")
    try:
        f.seek(0)
        with warnings.catch_warnings():  # torch warns about some pickle protocols: one line only
            warnings.simplefilter("ignore")
            payload = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's safe loader fails the same way on damage (a flipped byte: "Unsupported
        # operand") as on a well-formed pickle it will not run: only the latter is refused,
        # damage is unreadable (and a run's last.pt falls back to prev.pt).
        if "Weights only load failed" not in str(err) or not _parses(f):
            raise _unreadable(path, key, err) from None
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        names = f"it names {found.group(1)}, " if found else ""
        raise UnsafeCheckpoint(
            f"{key}: refused {path}: {names}which could run code on load, and sdrun loads only "
            "tensors and plain values; use a checkpoint written by sdrun or re-save the weights "
            "as a plain state_dict (torch.save(model.state_dict(), path))"
        ) from None
    except Exception as err:  # torch raises many types for a damaged file
        raise _unreadable(path, key, err) from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{key}: {path} holds a {type(payload).__name__}, not a checkpoint dict; "
            "use a .pt written by sdrun or a saved state_dict"
        )
    return payload


def _zip_damage(f: IO[bytes]) -> Optional[str]:
    """What is damaged in a zip-format checkpoint (torch's format since 1.6), or None.

    torch stores every record uncompressed with its CRC-32 but never checks them on load: a
    flipped bit in a tensor loads as a wrong weight without a word. zipfile checks each CRC as
    it reads a record to its end. A record stored with CRC 0 was written without checksums
    (torch.serialization.config.save.compute_crc32=False) and is not checked.
    """
    if not zipfile.is_zipfile(f):
        return None  # not a zip (the legacy format, or cut short): torch.load judges it
    try:
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
            for info in archive.infolist():
                if info.CRC == 0:
                    continue
                with archive.open(info) as record:
                    while record.read(1 << 22):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return " ".join(str(err).split()) or type(err).__name__
    return None


def _parses(f: IO[bytes]) -> bool:
    """Whether the checkpoint's pickle is well formed. pickletools only reads the opcodes and
    runs nothing, so this is safe on any file."""
    try:
        if zipfile.is_zipfile(f):
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            f.seek(0)
            data = f.read()
        for _ in pickletools.genops(data):
            pass
    except Exception:  # noqa: BLE001 - whatever the reason, it does not parse
        return False
    return True


def _unreadable(path: Path, key: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{key}: {path} is not a readable checkpoint ({type(err).__name__}); "
        "it may be truncated: use another checkpoint"
    )


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint sdrun wrote, for resume; a missing or unreadable file is one line."""
    payload = load_weights(path, "resume")
    missing = [k for k in ("model", "optimizer", "epoch", "config") if k not in payload]
    if missing:
        raise CheckpointError(
            f"resume: {path} lacks {', '.join(missing)}; it was not written by sdrun"
        )
    return payload


def load_for_resume(path: Path) -> dict[str, Any]:
    """Load `path`; if it is a run's damaged last.pt, fall back to its prev.pt, saying so."""
    previous = path.with_name(PREV)
    if path.name != LAST or not previous.is_file():
        return load(path)
    try:
        return load(path)
    except UnsafeCheckpoint:
        raise  # not damage: someone put it there; never fall back past it silently
    except CheckpointError as err:
        payload = load(previous)
        log.warning("%s; resuming from %s (epoch %d) instead", err, previous, payload["epoch"])
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
