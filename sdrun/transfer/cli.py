"""The `sdrun-transfer` command: Hydra composes `conf/transfer.yaml`, sdrun-transfer validates
it and fine-tunes. It shares sdrun's command-line machinery: `resume=<run dir>` re-applies the
run's overrides, the run-directory guard, torchrun's shared run directory, one-line errors.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sdrun.cli import launch
from sdrun.commandline.overrides import (
    PATH_KEYS,
    distributed_overrides,
    job_run_dir,
    quote_paths,
    resume_overrides,
)
from sdrun.commandline.run_dir_guard import run_task
from sdrun.commandline.saved_overrides import Command
from sdrun.transfer.config import TransferConfig, register_configs, validate

# What `resume=` takes from a run folder's saved overrides: keys of the transfer schema and its
# groups' shipped configs (task, trainer, logger).
TRANSFER = Command("sdrun-transfer", TransferConfig, "transfer")


def backbone_tag(spec: Optional[str]) -> str:
    """A folder-name-safe tag for `backbone=`: timm-resnet101, scratch-resnet50, or the last
    two parts of a run's path (e.g. sd_seed0 for outputs/reproduce/.../sd/seed0)."""
    if not spec:
        return "none"
    if spec.startswith(("timm:", "scratch:")):
        text = spec.replace(":", "-", 1)
    else:
        path = Path(spec.rstrip("/"))
        if path.suffix == ".pt" and path.parent.name == "checkpoints":
            path = path.parent.parent
        text = "_".join(path.parts[-2:])
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "backbone"


# At import: a launcher that runs jobs in other processes (submitit) imports this module there.
OmegaConf.register_new_resolver("sdrun_backbone", backbone_tag, replace=True)


def _task(dict_cfg: DictConfig) -> Optional[float]:
    def work() -> Optional[float]:
        cfg: TransferConfig = OmegaConf.to_object(dict_cfg)
        validate(cfg)  # before any data or model is built
        from sdrun.transfer.parts import TASKS
        from sdrun.transfer.runner import run

        summary = run(cfg, job_run_dir(HydraConfig.get().runtime.output_dir))
        value = summary.get(TASKS[cfg.task.name].METRIC)
        return None if value is None else float(value)  # what Hydra sweepers optimise

    return run_task(work, prog="sdrun-transfer")


def main() -> None:
    register_configs()
    # `backbone=` takes a run folder too: pasted as it is, quoted or not (see quote_paths).
    argv = distributed_overrides(
        resume_overrides(quote_paths(sys.argv[1:], PATH_KEYS + ("backbone",)), TRANSFER)
    )
    launch(_task, "transfer", argv, prog="sdrun-transfer")


if __name__ == "__main__":
    main()
