"""Files a sweep or search writes into its folder, which may come from someone else."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
