"""Reading a run folder's files as plain data, through sdrun.trust.files only: regular files
(no link followed, no FIFO or device), size caps, JSON depth cap, YAML without anchors or
aliases. Everything in a run folder is untrusted input: a file that cannot be read, or holds
what sdrun never writes, is a reason to list the run ("not read: ..."), never a crash or a hang.

A run folder is reached by a walk that follows no link (walk.py); the files read inside it are
in the run folder itself or in its `.hydra/` folder, which must be a real folder too (a link
there would lead outside the folders the report was given).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any, Optional

import yaml

from sdrun.trust import files

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = Path(".hydra") / "config.yaml"
HYDRA = Path(".hydra") / "hydra.yaml"
CURVES = "curves.png"  # what sdrun.runfolder.run_plots draws into a finished run's folder
DEPTH = files.JSON_DEPTH  # a config nests 3 levels; flattening a deeper one is refused
# Everything a read can raise for a file that is not what sdrun wrote.
READ_ERRORS = (OSError, ValueError, UnicodeError, yaml.YAMLError, RecursionError)

# Summary values the report averages: each must be a finite number (or absent/null). A NaN
# would make its row `nan ± nan`, a string would stop the report.
NUMBERS = ("student/top1", "student/best_top1", "student/top1_at_val_best", "teacher/top1",
           "ensemble/top1", "val/top1", "time/wall_s", "time/train_s", "time/process_s",
           "time/lost_process_s")  # fmt: skip


def shorten(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters: a value from a folder can be megabytes long."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_read(err: BaseException) -> str:
    """The reason a file was not read, in one line (UnsafeFile's own line names the file)."""
    return f"not read: {shorten(str(err), 400) or type(err).__name__}"


def inside(folder: Path, relative: Path) -> Path:
    """`folder / relative`, refused (UnsafeFile) when a folder on the way is a link or not a
    folder: the file itself is then opened without following a link (trust.files)."""
    path = folder
    for part in Path(relative).parts[:-1]:
        path = path / part
        mode = os.lstat(path).st_mode
        if not stat.S_ISDIR(mode):
            raise files.UnsafeFile(
                f"{path} is a {files.kind_of(mode)}, not a folder; sdrun-report reads only "
                "inside the folders it is given: replace it with the folder it stands for"
            )
    return folder / relative


class NotSdrunShape(ValueError):
    """A file that parses, but not into the shape sdrun writes (a list for a mapping)."""


def read_mapping_yaml(path: Path, name: object = None) -> dict[str, Any]:
    """A YAML mapping (config.yaml, hydra.yaml) nested at most DEPTH levels; raises one of
    READ_ERRORS otherwise (NotSdrunShape, naming the file as `name`, for a wrong shape)."""
    tree = files.read_yaml(path)
    name = path.name if name is None else name
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise NotSdrunShape(f"{name} is a {type(tree).__name__}, not a mapping")
    if _deeper_than(tree, DEPTH):
        raise NotSdrunShape(f"{name} nests deeper than {DEPTH} levels")
    return tree


def _deeper_than(value: Any, limit: int) -> bool:
    if not isinstance(value, (dict, list)):
        return False
    if limit <= 0:
        return True
    items = value.values() if isinstance(value, dict) else value
    return any(_deeper_than(v, limit - 1) for v in items)


def read_config(run_dir: Path) -> dict[str, Any]:
    return read_mapping_yaml(inside(run_dir, CONFIG), CONFIG)


def read_summary(run_dir: Path) -> tuple[Any, float]:
    """(summary.json as parsed, its modification time): FileNotFoundError when it is absent."""
    path = run_dir / SUMMARY
    data = files.read_json(path)
    return data, os.lstat(path).st_mtime


def has_summary(run_dir: Path) -> bool:
    return os.path.lexists(run_dir / SUMMARY)


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, number of unreadable lines) of a metrics.jsonl; none when it is absent. A
    line that is not a JSON object (a bare number, a list, too deep, too long) is unreadable."""
    if not os.path.lexists(path):
        return [], 0
    return files.read_json_lines(path)


def curves_of(run_dir: Path) -> Optional[Path]:
    """The run's own curves.png when it is a regular file (a link is not shown)."""
    try:
        return run_dir / CURVES if stat.S_ISREG(os.lstat(run_dir / CURVES).st_mode) else None
    except OSError:
        return None


def bad_number(summary: dict[str, Any]) -> Optional[str]:
    """Why a summary value the report averages is not usable (None: all are): each must be a
    finite real number or absent."""
    for key in NUMBERS:
        value = summary.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{SUMMARY}: {key} is {shorten(repr(value))}, not a number"
        if not math.isfinite(value):
            return f"{SUMMARY}: {key} is {value}, not a finite number"
    return None
