"""Where metrics go: metrics.jsonl and summary.json in the run directory, and wandb.

metrics.jsonl is the record of truth, written whatever happens to wandb. wandb is optional:
it runs offline unless configured otherwise, never asks for a login, and any failure of it
becomes one warning while training goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Protocol

from sdrun.config import LoggerConfig
from sdrun.errors import SdrunError

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsFile:
    """One JSON object per epoch, appended and flushed as each epoch ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after `epoch` (a resumed run writes them again)."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and _epoch_of(line) is not None and _epoch_of(line) <= epoch
        ]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
                f.flush()
        except OSError as err:
            raise SdrunError(
                f"could not write {self.path} ({err.strerror or err}); the epoch's checkpoint is "
                "saved: free disk space or fix permissions, then resume from the run directory"
            ) from None


def _epoch_of(line: str) -> Optional[int]:
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({k: _clean(v) for k, v in summary.items()}, indent=2) + "\n")
    os.replace(tmp, path)


class Logger(Protocol):
    def log(self, record: dict[str, Any], step: int) -> None: ...
    def summary(self, summary: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


class NullLogger:
    def log(self, record: dict[str, Any], step: int) -> None:
        pass

    def summary(self, summary: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    """wandb with every call guarded: the first failure disables it with one warning."""

    def __init__(
        self,
        cfg: LoggerConfig,
        run_dir: Path,
        config: dict[str, Any],
        name: str,
        run_id: Optional[str] = None,
    ) -> None:
        self.run = None
        try:
            import wandb

            mode = cfg.mode
            if mode == "online" and not _has_wandb_credentials():
                log.warning(
                    "wandb: no API key found (WANDB_API_KEY or wandb login); logging offline"
                )
                mode = "offline"
            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                tags=list(cfg.tags),
                name=name,
                id=run_id,
                resume="allow" if run_id else None,
                dir=str(run_dir),
                config=config,
                mode=mode,
                settings=wandb.Settings(silent=True, console="off", init_timeout=60),
            )
        except Exception as err:  # noqa: BLE001 - any logger failure must not stop training
            self._fail(err)

    @property
    def run_id(self) -> Optional[str]:
        return None if self.run is None else self.run.id

    def _fail(self, err: BaseException) -> None:
        log.warning(
            "wandb disabled after an error (%s: %s); metrics.jsonl is complete",
            type(err).__name__,
            err,
        )
        self.run = None

    def log(self, record: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in record.items() if v is not None}, step=step)
        except Exception as err:  # noqa: BLE001
            self._fail(err)

    def summary(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            for key, value in summary.items():
                if isinstance(value, (int, float, str, bool)):
                    self.run.summary[key] = value
        except Exception as err:  # noqa: BLE001
            self._fail(err)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as err:  # noqa: BLE001
            self._fail(err)


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_logger(
    cfg: LoggerConfig,
    run_dir: Path,
    config: dict[str, Any],
    name: str,
    run_id: Optional[str] = None,
) -> Logger:
    if cfg.name == "none" or cfg.mode == "disabled":
        return NullLogger()
    return WandbLogger(cfg, run_dir, config, name, run_id)
