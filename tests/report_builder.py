"""Synthetic run folders in the formats sdrun writes (`.hydra/config.yaml`, summary.json,
metrics.jsonl), for report tests that need exact numbers and no training."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf

from sdrun.config import Config
from sdrun.methods import default_settings, find_method

BASE: dict[str, Any] = OmegaConf.to_container(OmegaConf.structured(Config))
NO_TEACHER = {"distill.name": "none", "distill.kd_weight": 0.0}
METHODS: dict[str, dict[str, Any]] = {
    "sd": {"schedule.name": "sd", "distill.name": "sd"},
    "cyclic": {"schedule.name": "sd", **NO_TEACHER},
    "cosine": {"schedule.name": "cosine", "schedule.cycle_length": None, **NO_TEACHER},
    "step": {"schedule.name": "step", "schedule.cycle_length": None, **NO_TEACHER},
    "kd": {
        "schedule.name": "cosine",
        "schedule.cycle_length": None,
        "distill.name": "kd",
        "distill.temperature": 4.0,
        "distill.smooth": "both",
    },  # fmt: skip
}
_clock = [1_700_000_000.0]  # summary mtimes: each new run is newer than the last


def config_of(method: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    cfg["seed"] = seed
    for key, value in {**METHODS[method], **overrides}.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    if find_method(cfg["distill"]["name"]) is not None:  # its settings, as sdrun writes them
        cfg["distill"] = {**asdict(default_settings(cfg["distill"]["name"])), **cfg["distill"]}
    return cfg


def write_run(
    folder: Path,
    method: str = "sd",
    seed: int = 0,
    top1: Optional[float] = 70.0,
    *,
    config: Optional[dict[str, Any]] = None,
    summary: Optional[dict[str, Any]] = None,
    write_summary: bool = True,
    launch_dir: Optional[Path] = None,
) -> Path:
    """A run folder: config = the defaults + the method's preset + `config` (dotted keys);
    a complete CPU summary with `top1` unless `summary` overrides keys (None removes one)."""
    cfg = config_of(method, seed, config or {})
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    if launch_dir is not None:  # where sdrun was started (Hydra's hydra.yaml records it)
        hydra = {"hydra": {"runtime": {"cwd": str(launch_dir), "output_dir": str(folder)}}}
        (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if not write_summary:
        return folder
    epochs, length = cfg["schedule"]["epochs"], cfg["schedule"]["cycle_length"]
    data = {
        "complete": True, "seed": seed, "epochs": epochs,
        "cycles": epochs // length if cfg["schedule"]["name"] == "sd" and length else 1,
        "student/top1": top1, "student/best_top1": None if top1 is None else top1 + 0.5,
        "time/wall_s": 3600.0, "time/process_s": 3600.0, "time/lost_wall_s": 0.0,
        "time/lost_process_s": 0.0, "device": "cpu", "device_type": "cpu", "processes": 1,
        "amp": "off", "sync_bn": False, "diverged": False,
    }  # fmt: skip
    for key, value in (summary or {}).items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = folder / "summary.json"
    path.write_text(json.dumps(data))
    _clock[0] += 10
    os.utime(path, (_clock[0], _clock[0]))
    return folder


def diverged(epoch: int = 2, step: int = 7) -> dict[str, Any]:
    """Summary keys of a run sdrun stopped on a non-finite loss."""
    return {"complete": False, "diverged": True, "diverged_epoch": epoch, "diverged_step": step}


def backbone_run(folder: Path, method: str, seed: int, **config: Any) -> Path:
    """A finished pre-training run with its `checkpoints/last.pt` (an empty stand-in: the
    report reads the run's config, never the weights)."""
    write_run(folder, method, seed, 70.0, config=_dotted(config))
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"")
    return folder


def _dotted(config: dict[str, Any]) -> dict[str, Any]:
    """`distill__temperature` -> `distill.temperature` (keyword arguments cannot hold dots)."""
    return {k.replace("__", "."): v for k, v in config.items()}


def write_transfer_run(
    folder: Path, backbone: Path, method: str, seed: int, value: float, task: str = "detection"
) -> Path:
    """A finished `sdrun-transfer` run fine-tuning `backbone` (a backbone_run) with `seed`."""
    config = {"task": {"name": task}, "backbone": str(backbone), "seed": seed,
              "dataset": {"name": "voc", "batch_size": 8}, "schedule": {"epochs": 1},
              "optim": {"lr": 0.02}}  # fmt: skip
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    source = yaml.safe_load((backbone / ".hydra" / "config.yaml").read_text())
    metric = {"detection": "test/map50", "segmentation": "test/miou"}[task]
    summary = {
        "complete": True, metric: value, "backbone/kind": "run",
        "backbone/source": str(backbone / "checkpoints" / "last.pt"),
        "backbone/model": source["model"]["name"], "backbone/method": method,
        "backbone/dataset": source["dataset"]["name"], "backbone/seed": source["seed"],
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    _clock[0] += 10
    os.utime(folder / "summary.json", (_clock[0], _clock[0]))
    return folder
