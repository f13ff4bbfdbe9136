"""`make reproduce`: a CIFAR-100 table (networks x methods x seeds), then the report.

Two tables (--table, `make reproduce TABLE=...`), on the same five networks and 3 seeds:
  paper   (default) SD against its controls: sd, cyclic, cosine, step, born-again
  selfkd  the one-run self-distillation family on SD's recipe: sd, cyclic, cosine, ls, tfkd,
          cskd, pskd, dlb, byot (docs/REPRODUCE.md, "The self-distillation table")
Both write into the same folders, so the runs they share (sd, cyclic, cosine) train once, and
the report at the end covers every run under --out, of either table. --methods picks among
the table's methods. Each run has a fixed folder, OUT/cifar100/<model>/<method>/seed<s>:
running it again skips finished runs and resumes killed ones.

Where the runs go (--launcher, `make reproduce LAUNCHER=...`):
  local      one run per GPU at a time, each seeing only its own GPU (CUDA_VISIBLE_DEVICES),
             as jobs of submitit's local executor; --gpus 0,1 picks the GPUs (default: all
             visible). The default where a GPU is visible.
  slurm      every run a SLURM job through submitit (--slurm "partition=gpu ..." changes
             conf/hydra/launcher/slurm.yaml's settings); chains wait in SLURM (afterok);
             --no-wait submits and returns. Preempted or timed-out jobs requeue and continue.
  processes  --jobs N runs at a time as child processes (each run's output then goes to its
             reproduce.log). The default without a GPU.
Each run's wall-clock time includes the contention of the runs beside it: time the table one
run at a time.

--smoke writes a tiny CIFAR-100-format data set into OUT/data and runs everything for 2
epochs on it: the whole pipeline (presets, cycles, teachers, chains, resume, report) in
minutes on a CPU. Its numbers mean nothing.

    python scripts/reproduce.py --models resnet56 --seeds 1
    python scripts/reproduce.py --smoke --out /tmp/smoke
    python scripts/reproduce.py --launcher slurm --slurm "partition=gpu timeout_min=1440"
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

from sdrun.reproduce.board import Board
from sdrun.reproduce.here import Extra, GpuStarter, ProcessStarter, run_here
from sdrun.reproduce.plan import (
    DEFAULT_TABLE,
    MODELS,
    SMOKE_DATA,
    TABLES,
    Job,
    command,
    plan,
    smoke_overrides,
    state,
    write_smoke_data,
)

LAUNCHERS = ("local", "slurm", "processes")


def parse_seeds(text: str) -> list[int]:
    """'3' -> seeds 0, 1, 2 (a count); '0,2' or '0 2' -> exactly those seeds."""
    parts = text.replace(",", " ").split()
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"seeds {text!r}: give a count (3: seeds 0,1,2) or a list (0,2)")
    if len(parts) == 1 and "," not in text:
        return list(range(int(parts[0])))
    return [int(p) for p in parts]


def parse_names(text: str, allowed: tuple[str, ...], what: str, where: str = "") -> list[str]:
    """Space- or comma-separated names, each one of `allowed` (none: all of them)."""
    names = text.replace(",", " ").split() or list(allowed)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(
            f"unknown {what} {', '.join(unknown)}{where}; pick from {', '.join(allowed)}"
        )
    return names


def parse_table(text: str) -> tuple[str, tuple[str, ...]]:
    """A table's name (empty: the default) and its methods."""
    name = text.strip() or DEFAULT_TABLE
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; pick from {', '.join(TABLES)}")
    return name, TABLES[name]


def parse_gpus(text: str) -> list[str]:
    """'0,1' or '0 1': GPU indices, as CUDA_VISIBLE_DEVICES numbers them."""
    gpus = text.replace(",", " ").split()
    if not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise ValueError(f"GPUS={text!r}: give distinct GPU indices, e.g. GPUS=0,1,2,3")
    return gpus


def visible_gpus() -> list[str]:
    """This machine's GPUs as a job sees them: CUDA_VISIBLE_DEVICES when it is set (a SLURM
    allocation sets it to the GPUs it holds), else every GPU torch finds."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        gpus = []
        for entry in (g.strip() for g in given.split(",")):
            if entry.startswith(("GPU-", "MIG-")):
                raise ValueError(f"CUDA_VISIBLE_DEVICES={given} names GPUs by UUID; give "
                                 "their indices with GPUS=0,1,...")  # fmt: skip
            if not entry.isdigit():
                break  # CUDA's rule: the devices before the first invalid entry (-1: none)
            gpus.append(entry)
        return gpus
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def choose_launcher(name: str, gpus: str, jobs: int, wait: bool) -> tuple[str, list[str]]:
    """The launcher (given, or local where a GPU is visible, else processes) and its GPUs;
    ValueError for settings that do not go together."""
    name = name.strip()
    if name and name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; pick from {', '.join(LAUNCHERS)}")
    picked = parse_gpus(gpus) if gpus.strip() else []
    if not name:
        picked = picked or visible_gpus()
        name = "local" if picked else "processes"
    if picked and name != "local":
        raise ValueError(f"GPUS is for LAUNCHER=local; LAUNCHER={name} does not pick GPUs")
    if name == "local" and not (picked := picked or visible_gpus()):
        raise ValueError("LAUNCHER=local runs one run per GPU and no GPU is visible; give "
                         "GPUS=0,1,... or use LAUNCHER=processes")  # fmt: skip
    if jobs != 1 and name != "processes":
        how = "one run per GPU (GPUS=...)" if name == "local" else "what SLURM allows"
        raise ValueError(f"JOBS is for LAUNCHER=processes; LAUNCHER={name} runs {how} at once")
    if name != "processes" and not _installed("hydra_plugins.hydra_submitit_launcher"):
        raise ValueError(f"LAUNCHER={name} runs its jobs through submitit and reads the Hydra "
                         "launcher's settings, which are not installed: pip install -e "
                         "'.[slurm]'")  # fmt: skip
    if not wait and name != "slurm":
        raise ValueError("WAIT=0 is for LAUNCHER=slurm: other launchers run the table here")
    return name, picked


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def dry_run(jobs: list[Job], extra: Extra, board: Board) -> None:
    """Every run and its command, in order; nothing runs."""
    for job in jobs:
        how = state(job.run_dir)
        if how == "done":
            board.say(job, "done, skipped")
        else:
            board.say(job, f"{how} -> {job.run_dir}", " ".join(command(job, how, extra(job))[1:]))


def _parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        description=doc[0], epilog="\n\n".join(doc[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    tables = "; ".join(f"{name}: {' '.join(methods)}" for name, methods in TABLES.items())
    add = parser.add_argument
    add("--table", default="", help=f"default {DEFAULT_TABLE}; the tables' methods: {tables}")
    add("--models", default="", help=f"default: all of {', '.join(MODELS)}")
    add("--methods", default="", help="default: all of the table's")
    add("--seeds", default="", help="a count (3: seeds 0,1,2) or a list (0,2)")
    add("--generations", type=int, default=2, help="born-again chain length")
    add("--out", default="", help="default: outputs/reproduce[-smoke]")
    add("--smoke", action="store_true", help="tiny data and epochs, on the CPU")
    add("--launcher", default="", help=f"{', '.join(LAUNCHERS)} (default: local with a GPU)")
    add("--gpus", default="", help="local: the GPUs to use, e.g. 0,1 (default: all visible)")
    add("--jobs", type=int, default=1, help="processes: runs side by side (default 1)")
    add("--slurm", default="", help="slurm: key=value settings over conf/hydra/launcher/slurm.yaml")
    add("--no-wait", action="store_true", help="slurm: submit, then return at once")
    add("--poll-s", type=float, default=None, help="seconds between looks at the runs")
    add("--dry-run", action="store_true", help="print the runs, run nothing")
    add("overrides", nargs="*", help="extra sdrun overrides for new runs")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        table, table_methods = parse_table(args.table)
        models = parse_names(args.models, MODELS, "model")
        methods = parse_names(args.methods, table_methods, "method", f" in table {table}")
        seeds = parse_seeds(args.seeds or ("1" if args.smoke else "3"))
        launcher, gpus = choose_launcher(args.launcher, args.gpus, args.jobs, not args.no_wait)
        options = _slurm_settings(args.slurm, args.dry_run) if launcher == "slurm" else {}
    except ValueError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or ("outputs/reproduce-smoke" if args.smoke else "outputs/reproduce"))
    out = out.expanduser().resolve()
    jobs = plan(models, methods, seeds, args.generations, out)
    smoke_root = out / "data" if args.smoke else None

    def extra(job: Job) -> list[str]:
        return [*args.overrides, *(smoke_overrides(job, smoke_root) if smoke_root else [])]

    board = Board(jobs)
    if args.dry_run:
        dry_run(jobs, extra, board)
        return 0
    if smoke_root:
        write_smoke_data(smoke_root, **SMOKE_DATA)
    code, ended = _launch(launcher, gpus, jobs, extra, out, options, board, args)
    if ended and any(state(j.run_dir) != "new" for j in jobs):
        from sdrun.errors import SdrunError
        from sdrun.report import write_report

        try:  # a plot per run: the paper table has tens of runs, and its folder is read whole
            report = write_report([out], out / "report", run_plots=True)
        except SdrunError as err:  # a report folder sdrun-report may not write into: one line
            print(f"reproduce: error: {err}", file=sys.stderr)
            return code or 2
        n_runs = sum(len(r.runs) for r in report.rows)
        print(f"reproduce: report of {n_runs} complete runs: {out / 'report' / 'RESULTS.md'}")
    return code


def _slurm_settings(given: str, dry: bool) -> dict:
    from sdrun.reproduce.slurm_settings import missing_commands, slurm_options

    options = slurm_options(given)  # a bad key is refused even in a dry run
    problem = None if dry else missing_commands()
    if problem:
        raise ValueError(problem)
    return options


def _launch(
    launcher: str, gpus: list[str], jobs: list[Job], extra: Extra, out: Path, options: dict,
    board: Board, args: argparse.Namespace,
) -> tuple[int, bool]:  # fmt: skip
    """Run (or submit) the table; (exit code, whether every run has ended)."""
    if launcher == "slurm":
        from sdrun.reproduce.slurm import run_on_slurm

        poll = 60.0 if args.poll_s is None else args.poll_s
        return run_on_slurm(jobs, extra, out, options, board, not args.no_wait, poll)
    if launcher == "local":
        starter = GpuStarter(gpus, out / "jobs" / "%j", os.getcwd())
    else:
        starter = ProcessStarter(max(1, args.jobs))
    code = run_here(jobs, extra, starter, board, 0.5 if args.poll_s is None else args.poll_s)
    return code, True
