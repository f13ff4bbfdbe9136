"""Reading a run folder's files as plain data: YAML with a safe loader, metrics.jsonl line by
line, and the summary values the report averages checked to be finite numbers. Everything in a
run folder is untrusted input: malformed content is a reason to list the run, never a crash.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import yaml

SUMMARY = "summary.json"

# Summary values the report averages: each must be a finite number (or absent/null). A NaN
# would make its row `nan ± nan`, a string would stop the report.
NUMBERS = ("student/top1", "student/best_top1", "student/top1_at_val_best", "teacher/top1",
           "ensemble/top1", "val/top1", "time/wall_s", "time/train_s", "time/process_s",
           "time/lost_process_s")  # fmt: skip


# libyaml's safe loader when PyYAML was built with it: the same safe subset of YAML (no Python
# objects), several times faster than the pure-Python one; reading configs is most of a large
# report's time.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_yaml(text: str) -> Any:
    """YAML text as plain data (never constructs Python objects)."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a safe loader


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, number of unreadable lines): a kill can cut the last line short; a line that
    is not a JSON object (a bare number, a list) is unreadable too."""
    if not path.is_file():
        return [], 0
    records, cut = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            cut += 1
    return records, cut


def bad_number(summary: dict[str, Any]) -> Optional[str]:
    """Why a summary value the report averages is not usable (None: all are): each must be a
    finite real number or absent."""
    for key in NUMBERS:
        value = summary.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{SUMMARY}: {key} is {value!r}, not a number"
        if not math.isfinite(value):
            return f"{SUMMARY}: {key} is {value}, not a finite number"
    return None
