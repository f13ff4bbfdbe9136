"""The `sdrun` command: Hydra composes the config, sdrun validates it and runs it.

`resume=<run dir>` re-applies the overrides the run was started with (from its
`.hydra/overrides.yaml`) and writes into the same run directory, so `sdrun resume=outputs/X`
is all a user types to continue a killed run; overrides given now win over the old ones.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sdrun import distributed, sweep
from sdrun.checkpoint import guard_run_dir
from sdrun.config import Config, register_configs, validate
from sdrun.errors import ConfigError, SdrunError, TrainingDiverged
from sdrun.interrupt import RunStopped

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
EXIT_USER_ERROR = 2

log = logging.getLogger("sdrun")


class RunDirGuard(Callback):
    """Checks the run dir before Hydra writes `.hydra/` into it (the task would be too late)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir)
        try:
            guard_run_dir(run_dir, resuming=config.resume is not None)
        except SdrunError as err:
            _exit_with(err)
        hydra_dir = run_dir / ".hydra"
        if (hydra_dir / "config.yaml").exists():  # resuming: keep what the run was started with
            backup = hydra_dir / f"before-resume-{time.strftime('%Y%m%d-%H%M%S')}"
            backup.mkdir(exist_ok=True)
            for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
                if (hydra_dir / name).exists():
                    shutil.copy2(hydra_dir / name, backup / name)


def _exit_with(err: SdrunError) -> NoReturn:
    print(f"sdrun: error: {err}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _task(dict_cfg: DictConfig) -> float:
    try:
        cfg: Config = OmegaConf.to_object(dict_cfg)
        validate(cfg)  # before any data or model is built: a typo costs a second
        from sdrun.runner import run

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = run(cfg, run_dir)
    except RunStopped as err:
        print(f"sdrun: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except TrainingDiverged as err:
        if sweep.in_search():  # a failed trial, not a failed search: Optuna records it
            log.error("trial failed: %s", err)  # in the trial's own sdrun.log
            raise sweep.TrialFailed(str(err)) from None
        _exit_with(err)
    except SdrunError as err:
        _exit_with(err)
    return sweep.objective(summary)


def resume_overrides(argv: list[str]) -> list[str]:
    """With `resume=<run dir or its checkpoint>`, continue in that run dir with its overrides."""
    resume = next((a.split("=", 1)[1] for a in argv if a.startswith("resume=")), None)
    if not resume or any(a.startswith("hydra.run.dir=") for a in argv):
        return argv
    path = Path(resume).expanduser()
    run_dir = path if path.is_dir() else path.parent.parent
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return argv  # a checkpoint outside a run dir: the command line must give the config
    given = {_key(a) for a in argv}
    old = [
        o
        for o in yaml.safe_load(overrides_file.read_text()) or []
        if _key(o) not in given and not _key(o).startswith("hydra.")
    ]
    return old + argv + [f"hydra.run.dir={run_dir.resolve()}"]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def distributed_overrides(argv: list[str]) -> list[str]:
    """Under torchrun, join the process group before Hydra so all ranks share one run dir.

    The run dir's timestamp comes from rank 0 (the `sdrun_now` resolver); ranks > 0 write no
    `.hydra/` files and no log file of their own.
    """
    info = distributed.from_env()
    stamp_fmt = {}

    def now(fmt: str) -> str:
        if fmt not in stamp_fmt:
            stamp_fmt[fmt] = distributed.shared_timestamp(fmt)
        return stamp_fmt[fmt]

    OmegaConf.register_new_resolver("sdrun_now", now, replace=True)
    if not info.enabled:
        return argv
    device_type = "cpu" if "trainer.device=cpu" in argv or not _cuda() else "cuda"
    distributed.init(device_type)
    if info.is_main:
        return argv
    return [*argv, "hydra.output_subdir=null", "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled"]  # fmt: skip


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    register_configs()
    argv = distributed_overrides(resume_overrides(sys.argv[1:]))
    problem = sweep.missing_search_plugin(argv)
    if problem:
        _exit_with(ConfigError(problem))
    sys.argv = [sys.argv[0], *argv]
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(_task)()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
