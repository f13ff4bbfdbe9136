"""Where metrics go: metrics.jsonl and summary.json in the run directory, and wandb.

metrics.jsonl is the record of truth, written whatever happens to wandb. wandb is optional:
it runs offline unless configured otherwise, never asks for a login, and any failure of it
becomes one warning while training goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Protocol

from sdrun.config import LoggerConfig
from sdrun.errors import SdrunError
from sdrun.trust import files

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
        if not os.path.lexists(self.path):
            return
        kept = [
            line
            for line in files.read_text(self.path, files.METRICS_CAP, errors="replace").splitlines()
            if line.strip() and _epoch_of(line) is not None and _epoch_of(line) <= epoch
        ]
        files.write_text(self.path, "".join(f"{line}\n" for line in kept))

    def append(self, record: dict[str, Any]) -> None:
        try:
            files.append_text(
                self.path, json.dumps({k: _clean(v) for k, v in record.items()}) + "\n"
            )
        except OSError as err:
            raise SdrunError(
                f"could not write {self.path} ({err.strerror or err}); the checkpoint of the "
                "epoch before is kept: free disk space or fix permissions, then resume from the "
                "run directory"
            ) from None


def _epoch_of(line: str) -> Optional[int]:
    try:
        return (
            int(files.loads_json(line, METRICS)["epoch"]) if len(line) <= files.LINE_CAP else None
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return None  # a line cut short by a kill


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records (a line cut short by a kill, or not an object, is left out)."""
    return files.read_json_lines(path)[0]


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    files.write_text(path, json.dumps({k: _clean(v) for k, v in summary.items()}, indent=2) + "\n")


class Logger(Protocol):
    active: bool  # whether anything logged goes anywhere

    def log(self, record: dict[str, Any], step: int) -> None: ...  # an epoch's record; step = epoch
    def log_step(self, step: int, values: dict[str, float]) -> None: ...  # per-iteration values
    def log_images(self, images: dict[str, Path], epoch: int) -> None: ...
    def log_checkpoint(self, path: Path, aliases: list[str], metadata: dict[str, Any]) -> None: ...
    def summary(self, summary: dict[str, Any]) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


class NullLogger:
    active = False

    def log(self, record: dict[str, Any], step: int) -> None:
        pass

    def log_step(self, step: int, values: dict[str, float]) -> None:
        pass

    def log_images(self, images: dict[str, Path], epoch: int) -> None:
        pass

    def log_checkpoint(self, path: Path, aliases: list[str], metadata: dict[str, Any]) -> None:
        pass

    def summary(self, summary: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


# Per-iteration series (LoopOptions.on_log), plotted against the global step `train/step`.
STEP_AXIS = "train/step"
STEP_KEYS = ("train/lr", "train/loss")
# Every other key is plotted against `epoch`. An epoch record's mean training loss would
# share its name with the per-step loss, so wandb gets it under another one.
EPOCH_AXIS = "epoch"
EPOCH_RENAMES = {"train/loss": "train/epoch_loss"}


class WandbLogger:
    """wandb with every call guarded: the first failure disables it with one warning.

    Rows are logged without wandb's own `step` (values logged at a step lower than wandb's
    current one would be dropped silently); each key is tied to its axis with define_metric:
    `train/step` for the per-iteration series, `epoch` for everything else.
    """

    def __init__(
        self,
        cfg: LoggerConfig,
        run_dir: Path,
        config: dict[str, Any],
        name: str,
        run_id: Optional[str] = None,
        *,
        group: Optional[str] = None,
        job_type: Optional[str] = None,
        tags: Optional[list[str]] = None,
    ) -> None:
        self.run = None
        self._defined: set[str] = set()
        try:
            import wandb

            mode = cfg.mode
            if mode == "online" and not _has_wandb_credentials():
                log.warning(
                    "wandb: no API key found (WANDB_API_KEY or wandb login); logging offline"
                )
                mode = "offline"
            if wandb.run is not None:
                # A run left open (a failure in an earlier job of the same Hydra multirun) is
                # finished, not returned and logged into. (Not wandb.init's
                # reinit="finish_previous": older wandb, 0.17 among them, refuses that value.)
                wandb.finish()
            run_dir.mkdir(parents=True, exist_ok=True)  # older wandb writes elsewhere otherwise
            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                tags=list(cfg.tags if tags is None else tags),
                name=name,
                group=group,
                job_type=job_type,
                id=run_id,
                resume="allow" if run_id else None,
                dir=str(run_dir),
                config=config,
                mode=mode,
                settings=wandb.Settings(silent=True, console="off", init_timeout=60),
            )
            self.run.define_metric(STEP_AXIS)
            self.run.define_metric(EPOCH_AXIS)
        except Exception as err:  # noqa: BLE001 - any logger failure must not stop training
            self._fail(err)

    @property
    def run_id(self) -> Optional[str]:
        return None if self.run is None else self.run.id

    @property
    def active(self) -> bool:
        return self.run is not None

    def _fail(self, err: BaseException) -> None:
        log.warning(
            "wandb disabled after an error (%s: %s); metrics.jsonl is complete",
            type(err).__name__,
            err,
        )
        run, self.run = self.run, None
        if run is not None:  # an unfinished run would leak into the next job of a multirun
            with contextlib.suppress(Exception):  # already disabled and warned
                run.finish(exit_code=1)

    def _define(self, keys: Any, axis: str) -> None:
        for key in keys:
            if key not in self._defined and key not in (STEP_AXIS, EPOCH_AXIS):
                self.run.define_metric(key, step_metric=axis)
                self._defined.add(key)

    def log(self, record: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            row = {EPOCH_RENAMES.get(k, k): v for k, v in record.items() if v is not None}
            row[EPOCH_AXIS] = step
            self._define(row, EPOCH_AXIS)
            self.run.log(row)
        except Exception as err:  # noqa: BLE001
            self._fail(err)

    def log_step(self, step: int, values: dict[str, float]) -> None:
        if self.run is None:
            return
        try:
            row = {**values, STEP_AXIS: step}
            self._define(row, STEP_AXIS)
            self.run.log(row)
        except Exception as err:  # noqa: BLE001
            self._fail(err)

    def log_images(self, images: dict[str, Path], epoch: int) -> None:
        if self.run is None:
            return
        try:
            import wandb

            row: dict[str, Any] = {k: wandb.Image(str(path)) for k, path in images.items()}
            self._define(row, EPOCH_AXIS)
            self.run.log({**row, EPOCH_AXIS: epoch})
        except Exception as err:  # noqa: BLE001
            self._fail(err)

    def log_checkpoint(self, path: Path, aliases: list[str], metadata: dict[str, Any]) -> None:
        """`path` as a version of the run's model artifact `model-<run id>`. The file is
        referenced, not copied (it never changes once written)."""
        if self.run is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata=metadata)
            artifact.add_file(str(path), name=path.name, policy="immutable", skip_cache=True)
            self.run.log_artifact(artifact, aliases=aliases)
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

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001
            self._fail(err)
        self.run = None


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
    *,
    group: Optional[str] = None,
    job_type: Optional[str] = None,
    tags: Optional[list[str]] = None,
) -> Logger:
    if cfg.name == "none" or cfg.mode == "disabled":
        return NullLogger()
    return WandbLogger(
        cfg, run_dir, config, name, run_id, group=group, job_type=job_type, tags=tags
    )
