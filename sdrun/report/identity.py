"""What makes two runs the same experiment, and two rows comparable.

A run's identity is what it computed: the config values it actually reads (a `step` schedule
never reads `cycle_length`, a run without a teacher never reads `distill.temperature`), how it
ran (processes, SyncBN, AMP dtype, device kind: numerics and BN statistics differ between
them) and, for a student of a teacher run, that teacher's own identity. Runs with the same
identity but different seeds are one row.

Two rows of different methods are compared when every setting both of them read agrees, the
method itself aside (schedule and distillation names; the distillation settings and teacher
when the distillation methods differ: SD's T=2 is not KD's T=4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from sdrun.methods import find_method

DEFINING = ("dataset.", "model.", "schedule.", "distill.", "optim.")
# Paths and loader settings do not change the result; a kd run's teacher is identified by the
# teacher run's own identity (`teacher.*`), not by its path.
NOT_DEFINING = {
    "dataset.root",
    "dataset.download",
    "dataset.eval_batch_size",
    "dataset.num_workers",
    "distill.teacher_checkpoint",
}
# Dataset keys that only some datasets read (sdrun/data/__init__.py); any other key is read.
DATASET_ONLY = {
    "dataset.num_train": {"fake"},
    "dataset.num_test": {"fake"},
    "dataset.num_classes": {"fake"},
    "dataset.image_size": {"fake", "imagenet"},
    "dataset.eval_resize": {"imagenet"},
}
# Schedule keys each schedule ignores (sdrun/schedule.py); an unknown key counts as read.
# The cycle count is identified by the effective `schedule.cycle_length` alone.
SCHEDULE_IGNORES = {
    "sd": {"schedule.milestones", "schedule.gamma", "schedule.cycles"},
    "cosine": {"schedule.cycle_length", "schedule.cycles", "schedule.milestones", "schedule.gamma"},
    "step": {"schedule.cycle_length", "schedule.cycles", "schedule.lr_min"},
}
RUNTIME = ("runtime.processes", "runtime.sync_bn", "runtime.amp", "runtime.device")
UNKNOWN = "unknown"  # a value an older sdrun did not record


def settings_read(config: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """The run-defining config values (flattened keys) that this run's code actually reads."""
    dataset = config.get("dataset.name")
    schedule = config.get("schedule.name")
    out = {}
    for key, value in config.items():
        if not key.startswith(DEFINING) or key in NOT_DEFINING:
            continue
        if key in DATASET_ONLY and dataset not in DATASET_ONLY[key]:
            continue
        if key in SCHEDULE_IGNORES.get(str(schedule), ()):
            continue
        if key.startswith("distill.") and key != "distill.name" and not _reads(config, key):
            continue
        out[key] = _hashable(value)
    if schedule == "sd":
        out["schedule.cycle_length"] = _cycle_length(config, summary)
    return out


def _reads(config: Mapping[str, Any], key: str) -> bool:
    """Whether the run's method reads the distill.* `key`: exactly its declared `reads`
    (sdrun/methods/; none reads no distill.* value); a method this sdrun lacks reads all."""
    method = find_method(config.get("distill.name"))
    return method is None or key in method.reads


def _cycle_length(config: Mapping[str, Any], summary: Mapping[str, Any]) -> Any:
    """Epochs per cycle as run: the summary's cycle count when there is one (the plan sdrun
    built), else the config's cycle_length (null: one cycle of all epochs)."""
    epochs, cycles = config.get("schedule.epochs"), summary.get("cycles")
    if isinstance(epochs, int) and isinstance(cycles, int) and cycles > 0:
        return epochs // cycles
    length = config.get("schedule.cycle_length")
    return epochs if length is None else length


def runtime_of(config: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """How the run executed, from its summary (sdrun records what it resolved); a value an
    older summary lacks is read from an explicit config value, else is `unknown`."""
    device = summary.get("device_type") or _device_kind(summary.get("device"))
    processes = summary.get("processes", UNKNOWN)
    amp = summary.get("amp")
    if amp is None:
        asked = config.get("trainer.amp")
        amp = {"off": "off", "bf16": "bf16", "fp16": "fp16"}.get(str(asked), UNKNOWN)
        if asked == "auto" and device == "cpu":
            amp = "off"  # auto means AMP on GPUs only
    sync_bn = summary.get("sync_bn")
    if sync_bn is None:
        sync_bn = bool(config.get("trainer.sync_bn")) and processes != 1
        if processes == UNKNOWN and config.get("trainer.sync_bn"):
            sync_bn = UNKNOWN
    return {
        "runtime.processes": processes,
        "runtime.sync_bn": sync_bn,
        "runtime.amp": amp,
        "runtime.device": device,
    }


def _device_kind(name: Optional[str]) -> str:
    if name is None:
        return UNKNOWN
    return "cpu" if str(name).lower() == "cpu" else "cuda"


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def method_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> set[str]:
    """Keys that tell two methods apart, and so are not compared between them."""
    keys = {"schedule.name", "distill.name", "method"}
    if a.get("distill.name") != b.get("distill.name"):
        keys |= {k for k in (*a, *b) if k.startswith(("distill.", "teacher."))}
    return keys


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """`key: a vs b` for every setting both identities read that differs, the method aside."""
    skip = method_keys(a, b)
    return [
        f"{key}: {_fmt(a[key])} vs {_fmt(b[key])}"
        for key in sorted(set(a) & set(b))
        if key not in skip and a[key] != b[key]
    ]


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)
