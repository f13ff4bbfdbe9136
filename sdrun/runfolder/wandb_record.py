"""What a run folder keeps of its wandb run (`wandb.json`): its identity - name, group, job
type, tags, as the first session chose them - and the last epoch a session that ended cleanly
had logged.

A resumed session reuses the identity, so a sweep or search job resumed on its own (`sdrun
resume=<job folder>`, no sweep around it) keeps the name with its swept values and its group.
A killed session never records its end: the next session logs the epochs since the last clean
end again, from metrics.jsonl, up to the checkpoint it resumes from - what the killed session
may never have sent. The file comes with the folder: it is read as data, each field checked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

from sdrun.config import LoggerConfig
from sdrun.runfolder.run_names import RunIdentity
from sdrun.trust import files

log = logging.getLogger(__name__)

RECORD = "wandb.json"
MAX_TEXT = 256  # longer than wandb's own limits on a name, group, job type or tag


@dataclass(frozen=True)
class WandbRecord:
    identity: RunIdentity
    synced_epoch: int = 0  # the last epoch logged by a session that ended cleanly


def read(run_dir: Path) -> Optional[WandbRecord]:
    """The folder's record, or None when it has none or it is not one (damaged, foreign)."""
    try:
        data = files.read_json(run_dir / RECORD)
        who = data["identity"]
        identity = RunIdentity(
            name=_text(who["name"]),
            group=None if who["group"] is None else _text(who["group"]),
            job_type=_text(who["job_type"]),
            tags=[_text(tag) for tag in who["tags"]],
        )
        synced = data["synced_epoch"]
        if not isinstance(synced, int) or isinstance(synced, bool) or synced < 0:
            raise ValueError(synced)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return WandbRecord(identity, synced)


def _text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(value)
    return value


def write(run_dir: Path, record: WandbRecord) -> None:
    try:  # bookkeeping: a failed write costs a replayed epoch later, not the run
        files.write_text(run_dir / RECORD, json.dumps({"identity": asdict(record.identity),
                         "synced_epoch": record.synced_epoch}) + "\n")  # fmt: skip
    except OSError as err:
        log.warning("could not write %s (%s)", run_dir / RECORD, err)


def kept_identity(
    record: Optional[WandbRecord], computed: RunIdentity, cfg: LoggerConfig
) -> RunIdentity:
    """The identity of the first session, except what this command sets explicitly
    (logger.run_name, logger.group, logger.job_type; logger.tags are added)."""
    if record is None:
        return computed
    kept = record.identity
    return replace(
        kept,
        name=cfg.run_name or kept.name,
        group=cfg.group or kept.group,
        job_type=cfg.job_type or kept.job_type,
        tags=list(dict.fromkeys([*kept.tags, *cfg.tags])),
    )


def unsent(records: list[dict[str, Any]], record: Optional[WandbRecord], epoch: int) -> list:
    """metrics.jsonl's epoch records that a killed session may not have sent: after the last
    clean end, up to `epoch` (the checkpoint resumed from)."""
    if record is None:
        return []
    return [
        r
        for r in records
        if isinstance(r.get("epoch"), int) and record.synced_epoch < r["epoch"] <= epoch
    ]
