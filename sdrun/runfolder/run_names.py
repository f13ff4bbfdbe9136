"""What a run is called in wandb: its name, group, job type and tags.

The name says what ran (model, method, the values its sweep varies, seed); the jobs of one
Hydra multirun (a sweep or a search) share a group, the sweep directory; the job type is the
method. Each can be set instead with `logger.run_name`, `logger.group`, `logger.job_type`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from sdrun.config import Config, flatten
from sdrun.methods import method_label
from sdrun.sweeps import sweep

# wandb's limits on a group and on a job type or tag, in characters.
MAX_GROUP, MAX_LABEL = 128, 64
# Swept keys that the name shows anyway (model, method, seed), or that say nothing.
SHOWN = {"model", "model.name", "distill", "distill.name", "schedule", "schedule.name", "seed",
         "experiment", "hparams_search", "resume"}  # fmt: skip


@dataclass(frozen=True)
class SweepInfo:
    dir: str  # the Hydra sweep directory, as configured
    swept: list[str] = field(default_factory=list)  # the keys the sweep varies


@dataclass(frozen=True)
class RunIdentity:
    name: str
    group: Optional[str]
    job_type: str
    tags: list[str]


def method_of(distill: str, schedule: str) -> str:
    """sd, cyclic (SD's cycles, no teacher), cosine, step or kd, as sdrun-report names them."""
    return method_label(distill, schedule)


def current_sweep() -> Optional[SweepInfo]:
    """The Hydra multirun this process runs a job of, or None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return SweepInfo(str(hydra_cfg.sweep.dir), sweep.multirun_swept(hydra_cfg))


def run_identity(cfg: Config, sweep_info: Optional[SweepInfo] = None) -> RunIdentity:
    method = method_of(cfg.distill.name, cfg.schedule.name)
    log_cfg = cfg.logger
    group = log_cfg.group or (sweep_info.dir[-MAX_GROUP:] if sweep_info else None)
    tags = [*log_cfg.tags, cfg.dataset.name, cfg.model.name, method]
    return RunIdentity(
        name=log_cfg.run_name or auto_name(cfg, method, sweep_info.swept if sweep_info else []),
        group=group,
        job_type=(log_cfg.job_type or method)[:MAX_LABEL],
        tags=[tag[:MAX_LABEL] for tag in dict.fromkeys(tags) if tag],
    )


def auto_name(cfg: Config, method: str, swept: list[str]) -> str:
    """`resnet56 sd temperature=2.5 cycles=4 seed0`: model, method, swept values, seed."""
    flat = flatten(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False))
    keys = [k for k in swept if k not in SHOWN and not k.startswith("hydra.")]
    short = _short_names(keys)
    values = [f"{short[k]}={_fmt(flat.get(k, flat.get(f'{k}.name')))}" for k in keys]
    return " ".join([cfg.model.name, method, *values, f"seed{cfg.seed}"])


def _short_names(keys: list[str]) -> dict[str, str]:
    """`distill.temperature` -> `temperature`, unless two keys would then read the same."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
