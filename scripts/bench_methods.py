"""The training methods `bench.py --methods` times beside the CE baseline: which ones it can
time (`family`: every registered self-distillation method, what `make bench` times), each
one's `distill` group as a run composes it, and their rows of the table and JSON."""

from __future__ import annotations

import argparse
from typing import Optional

from hydra import compose, initialize_config_dir, initialize_config_module
from omegaconf import OmegaConf

from sdrun.commandline.overrides import CONFIG_DIR
from sdrun.config_store import register_configs
from sdrun.methods import FILE, MethodSettings, method_class, method_names
from sdrun.methods.selfkd import SelfDistillation

FAMILY = "family"  # --methods family: every registered self-distillation method


def family() -> list[str]:
    """The registered methods that teach the student with itself (ls, tfkd, ...: whatever
    module registers one), in registration order."""
    return [n for n in method_names() if issubclass(method_class(n), SelfDistillation)]


def parse_methods(text: str) -> list[str]:
    """`--methods ls,tfkd,pskd` (or `family`) as registered method names (argparse's type)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == [FAMILY]:
        return family()
    for name in names:
        if name not in method_names():
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a registered method; pick from {', '.join(method_names())} "
                f"or {FAMILY}"
            )
        if method_class(name).teacher == FILE:
            # Its teacher is a trained model from a checkpoint; `sd` times the same teacher step.
            raise argparse.ArgumentTypeError(
                f"{name!r} needs a teacher checkpoint; time its teacher step with the sd phase"
            )
    return names


def method_config(name: str) -> MethodSettings:
    """The `distill` group as `distill=<name>` composes it (the method's settings), so the
    bench times the method with the values a run uses."""
    register_configs()  # the schema and the methods' settings, as the CLI registers them
    if CONFIG_DIR.startswith("pkg://"):
        init = initialize_config_module(CONFIG_DIR.removeprefix("pkg://"), version_base="1.3")
    else:
        init = initialize_config_dir(CONFIG_DIR, version_base="1.3")
    with init:
        cfg = compose("config", overrides=[f"distill={name}"])
    return OmegaConf.to_object(cfg.distill)


def relative(entry: dict, baseline: dict) -> dict:
    """A method's measurement with its step time and peak memory over the baseline's."""
    mem, base_mem = entry["peak_mem_mb"], baseline["peak_mem_mb"]
    return {
        **entry,
        "over_baseline_time": entry["ms_per_step"] / baseline["ms_per_step"],
        "over_baseline_memory": mem / base_mem if mem and base_mem else None,
    }


def method_rows(methods: dict) -> list[str]:
    """The table's rows for the timed methods (after the baseline and sd rows)."""
    rows = [f"{'method':10} {'img/s':>10} {'ms/step':>10} {'peak MB':>10} {'time/base':>10} "
            f"{'mem/base':>10}"]  # fmt: skip
    for name, m in methods.items():
        rows.append(f"{name:10} {m['img_per_s']:10.1f} {m['ms_per_step']:10.2f} "
                    f"{_num(m['peak_mem_mb'], '.0f'):>10} {m['over_baseline_time']:10.3f} "
                    f"{_num(m['over_baseline_memory'], '.3f'):>10}")  # fmt: skip
    return rows


def _num(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)
