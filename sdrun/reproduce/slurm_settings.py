"""The settings of `make reproduce`'s SLURM jobs: conf/hydra/launcher/slurm.yaml, the same
file `sdrun -m hydra/launcher=slurm` reads, on the submitit plugin's defaults, changed with
SLURM="key=value ..." (`make reproduce SLURM=...`); and submitit's executor made with them, as
the Hydra launcher makes its own."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any, Optional

LAUNCHER_FILE = "hydra/launcher/slurm.yaml"
# what sdrun itself sets: the job's name, where submitit keeps its files
OWN_KEYS = {"_target_", "submitit_folder", "name"}


def slurm_options(given: str) -> dict[str, Any]:
    """The launcher settings: the submitit plugin's defaults, conf/hydra/launcher/slurm.yaml on
    them, then `given` (`key=value ...`, shell-quoted). ValueError: one line naming the key."""
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    base = OmegaConf.structured(SlurmQueueConf)
    ours = OmegaConf.create(_launcher_yaml())
    ours.pop("defaults", None)
    keys = sorted(k for k in base if k not in OWN_KEYS)
    try:
        pairs = shlex.split(given)
    except ValueError as err:
        raise ValueError(f"SLURM={given!r}: {err}") from None
    for pair in pairs:
        key = pair.split("=", 1)[0].split(".", 1)[0]
        if "=" not in pair or key not in keys:
            raise ValueError(f"SLURM: {pair!r} is not key=value with a key of conf/"
                             f"{LAUNCHER_FILE} ({', '.join(keys)})")  # fmt: skip
    try:
        merged = OmegaConf.merge(base, ours, OmegaConf.from_dotlist(pairs))
        merged.name = "sdrun-reproduce"
        merged.submitit_folder = ""
        return OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ValueError(f"SLURM: {key + ': ' if key else ''}{str(err).splitlines()[0]}") from None


def _launcher_yaml() -> str:
    from importlib.resources import files

    from sdrun.commandline.overrides import CONFIG_DIR, CONFIG_PACKAGE

    if CONFIG_DIR.startswith("pkg://"):
        return files(CONFIG_PACKAGE).joinpath(LAUNCHER_FILE).read_text()
    return (Path(CONFIG_DIR) / LAUNCHER_FILE).read_text()


def missing_commands() -> Optional[str]:
    """Why SLURM jobs cannot be submitted from here (None: they can)."""
    missing = [c for c in ("sbatch", "srun", "sacct") if shutil.which(c) is None]
    if not missing:
        return None
    return (f"LAUNCHER=slurm needs SLURM's {', '.join(missing)} on PATH: run make reproduce on "
            "a login node of the cluster")  # fmt: skip


def executor(folder: Path, options: dict[str, Any]) -> Any:
    """submitit's SLURM executor with `options`, named as the Hydra launcher names them."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = {k: v for k, v in options.items() if k not in ("_target_", "submitit_folder")}
    retries = params.pop("max_num_timeout")
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=retries)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    ex.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    return ex
