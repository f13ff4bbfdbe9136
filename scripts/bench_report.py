"""How long `sdrun-report` takes on many runs: writes N synthetic run folders (the files sdrun
writes: .hydra/config.yaml, summary.json, a metrics.jsonl line per epoch) and times the report
on them, without and with `--run-plots`. See docs/PERFORMANCE.md.

    python scripts/bench_report.py --runs 500 --epochs 240
    python scripts/bench_report.py --runs 20 --epochs 4 --run-plots --json
    python scripts/bench_report.py --runs 1000 --cli   # also `sdrun-report` as a command

`--cli` times the command itself in a new process, imports included (`cli_cpu_s`, `cli_wall_s`),
as a user waits for it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf

from sdrun.config import Config
from sdrun.report import write_report

# The method presets, as a sweep of SD's temperature against the three baselines.
METHODS: list[dict[str, Any]] = [
    {"schedule": {"name": "sd"}, "distill": {"name": "sd", "temperature": 2.0}},
    {"schedule": {"name": "sd"}, "distill": {"name": "sd", "temperature": 4.0}},
    {"schedule": {"name": "cosine", "cycle_length": None}, "distill": {"name": "none"}},
    {"schedule": {"name": "step", "cycle_length": None}, "distill": {"name": "none"}},
]


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) else value
    return out


def write_runs(root: Path, n: int, epochs: int) -> None:
    """n runs in one sweep folder: the methods above, seeds 0, 1, ... each."""
    base = OmegaConf.to_container(OmegaConf.structured(Config))
    sweep = root / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for i in range(n):
        method, seed = METHODS[i % len(METHODS)], i // len(METHODS)
        cfg = merge(base, {**method, "seed": seed, "schedule": {**method["schedule"],
                                                                  "epochs": epochs}})  # fmt: skip
        run = sweep / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
        top1 = 70.0 + (i % 7) * 0.1
        lines = [
            {"epoch": e, "cycle": 1 + 4 * (e - 1) // epochs, "lr": 0.1, "student/top1": top1,
             "teacher/top1": top1 - 1, "train/loss": 1.0}
            for e in range(1, epochs + 1)
        ]  # fmt: skip
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        summary = {"complete": True, "seed": seed, "epochs": epochs, "student/top1": top1,
                   "student/best_top1": top1 + 0.5, "time/wall_s": 3600.0,
                   "time/process_s": 3600.0, "time/lost_process_s": 0.0, "device": "cpu",
                   "device_type": "cpu", "processes": 1, "amp": "off", "sync_bn": False,
                   "diverged": False}  # fmt: skip
        (run / "summary.json").write_text(json.dumps(summary))


def time_cli(root: Path) -> dict[str, float]:
    """`sdrun-report <root>` in a new process: CPU seconds (user + system) and wall seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, "-m", "sdrun.report", str(root), "--out", str(root / "cli")]
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cli_cpu_s": cpu, "cli_wall_s": wall}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=240, help="metrics.jsonl lines per run")
    parser.add_argument("--run-plots", action="store_true", help="also time one PNG per run")
    parser.add_argument("--cli", action="store_true", help="also time the sdrun-report command")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_runs(root, args.runs, args.epochs)
        times = {}
        for plots in (False, True) if args.run_plots else (False,):
            name = "with_run_plots" if plots else "report"
            start, cpu = time.perf_counter(), time.process_time()
            report = write_report([root], root / f"report_{plots}", run_plots=plots)
            # CPU seconds too: on a shared machine the wall time says more about the others
            times[f"{name}_cpu_s"] = time.process_time() - cpu
            times[f"{name}_wall_s"] = time.perf_counter() - start
        if args.cli:
            times.update(time_cli(root))
        result = {"runs": len(report.runs), "rows": len(report.rows), "epochs": args.epochs,
                  **{k: round(v, 2) for k, v in times.items()}}  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(", ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
