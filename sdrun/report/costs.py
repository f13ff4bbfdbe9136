"""What a run cost, from its summary.json (sdrun/runfolder/run_state.py keeps the counts).

- `time/wall_s`: seconds of training, evaluation and checkpoints, over every session.
- `time/process_s`: the same seconds times the processes of the session they were spent in
  (one GPU per process on GPUs: GPU-seconds), so a resume on another process count is right.
- `time/lost_process_s`: process-seconds of work thrown away by stops: what a killed session
  did after its last checkpoint (and all of a session killed before its first one), read on
  resume from the session's heartbeat file; the resumed run did that work again.

A key an older sdrun did not write reads as unknown (None), never as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional


def _get(summary: Mapping[str, Any], key: str) -> Optional[float]:
    value = summary.get(key)
    return None if value is None else float(value)


def wall_s(summary: Mapping[str, Any]) -> Optional[float]:
    value = _get(summary, "time/wall_s")
    return _get(summary, "time/train_s") if value is None else value


def process_s(summary: Mapping[str, Any]) -> Optional[float]:
    return _get(summary, "time/process_s")


def lost_process_s(summary: Mapping[str, Any]) -> Optional[float]:
    return _get(summary, "time/lost_process_s")


def total_process_s(summary: Mapping[str, Any]) -> Optional[float]:
    """Everything the run used: the work in its result plus the work lost to stops."""
    done, lost = process_s(summary), lost_process_s(summary)
    return None if done is None or lost is None else done + lost


def hours(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else seconds / 3600.0
