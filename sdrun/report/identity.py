"""What makes two runs the same experiment, and two rows comparable.

A run's identity is what it computed: the config values it actually reads (a `step` schedule
never reads `cycle_length`, a run without a teacher never reads `distill.temperature`), how it
ran (processes, SyncBN, AMP dtype, device kind: numerics and BN statistics differ between
them) and, for a student of a teacher run, that teacher's own identity. Runs with the same
identity but different seeds are one row.

Two rows of different methods are compared when every setting agrees, the method itself aside
(schedule and distillation names; the distillation settings and teacher when the distillation
methods differ: SD's T=2 is not KD's T=4). A setting one side has and the other lacks (a model
kwarg given to one run only) is a difference, unless the side without it does not read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from sdrun.report.method_catalog import find_method

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
# Schedule keys each schedule ignores (sdrun/training/schedule.py); an unknown key counts as read.
# The cycle count is identified by the effective `schedule.cycle_length` alone.
SCHEDULE_IGNORES = {
    "sd": {"schedule.milestones", "schedule.gamma", "schedule.cycles"},
    "cosine": {"schedule.cycle_length", "schedule.cycles", "schedule.milestones", "schedule.gamma"},
    "step": {"schedule.cycle_length", "schedule.cycles", "schedule.lr_min"},
}
RUNTIME = ("runtime.processes", "runtime.sync_bn", "runtime.amp", "runtime.device")
UNKNOWN = "unknown"  # a value an older sdrun did not record


def method_reads(config: Mapping[str, Any], key: str) -> bool:
    """Whether a run with these settings (a flattened config or an identity: only its
    `dataset.name`, `schedule.name` and `distill.name` are used) reads the run-defining `key`,
    set or not. This is the one place that knows which key each method ignores."""
    if not key.startswith(DEFINING) or key in NOT_DEFINING:
        return False
    if key in DATASET_ONLY and config.get("dataset.name") not in DATASET_ONLY[key]:
        return False
    if key in SCHEDULE_IGNORES.get(str(config.get("schedule.name")), ()):
        return False
    return not (key.startswith("distill.") and key != "distill.name" and not _reads(config, key))


def settings_read(config: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """The run-defining config values (flattened keys) that this run's code actually reads."""
    out = {key: _hashable(value) for key, value in config.items() if method_reads(config, key)}
    if config.get("schedule.name") == "sd":
        out["schedule.cycle_length"] = _cycle_length(config, summary)
    return out


def _reads(config: Mapping[str, Any], key: str) -> bool:
    """Whether the run's method reads the distill.* `key`: exactly the keys of its settings
    (sdrun/methods/: its schema is its identity; none has none), as the report's torch-free
    method table holds them (method_catalog.py, kept equal to the registered settings by
    tests/test_report_speed.py). An older sdrun's flat block holds every method's keys: those
    its method lacks were never read. A method this sdrun lacks reads all."""
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
    """`key: a vs b` for every setting that differs, the method aside: a key set on one side
    only (`+model.kwargs.drop_rate=0.3` against no kwargs, which flattening leaves out) differs
    from the other side's default, unless the other side's method does not read it."""
    skip = method_keys(a, b)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        if key in a and key in b:
            if a[key] != b[key]:
                out.append(f"{key}: {_fmt(a[key])} vs {_fmt(b[key])}")
        elif one_sided_differs(a, b, key):
            value_a = _fmt(a[key]) if key in a else NOT_SET
            value_b = _fmt(b[key]) if key in b else NOT_SET
            out.append(f"{key}: {value_a} vs {value_b}")
    return out


NOT_SET = "not set"


def one_sided_differs(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> bool:
    """A key only one identity has: a difference when the identity without it would read it
    (it is then missing from its config, and the code uses its default), no difference when
    that identity's method ignores the key (a `step` run has no cycle length)."""
    lacking = b if key in a else a
    return method_reads(lacking, key)


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)
