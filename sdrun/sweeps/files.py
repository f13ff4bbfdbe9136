"""Files a sweep or search writes into its folder, which may come from someone else."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml


def write_text_atomic(path: Path, text: str) -> None:
    """`path` replaced by a file holding `text`: written to a new temporary file beside it
    (mkstemp: created exclusively, never an existing file or link), then renamed over it, which
    replaces a link itself rather than writing where it points. (The trust module's
    `write_text_atomic` does the same; this one goes when that lands.)"""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MAX_RECORD = 1 << 20  # bytes: sdrun's sweep records are a few KB


def read_yaml_record(path: Path) -> Optional[dict[str, Any]]:
    """A record sdrun wrote (optimization_results.yaml), read as data: a plain file of at most
    MAX_RECORD bytes (not a FIFO or a device, which would hang or never end), None when it is
    missing or is not such a file, or not a YAML mapping."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD:
            return None
        try:
            data = yaml.safe_load(handle.read(MAX_RECORD).decode("utf-8"))
        except (UnicodeError, yaml.YAMLError):
            return None
    return data if isinstance(data, dict) else None
