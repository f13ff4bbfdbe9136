"""`make reproduce`: a CIFAR-100 table (networks x methods x seeds), then the report.

Two tables (--table, `make reproduce TABLE=...`), on the same five networks and 3 seeds:
  paper   (default) SD against its controls: sd, cyclic, cosine, step, born-again
  selfkd  the one-run self-distillation family on SD's recipe: sd, cyclic, cosine, ls, tfkd,
          cskd, pskd, dlb, byot (docs/REPRODUCE.md, "The self-distillation table")
Both write into the same folders, so the runs they share (sd, cyclic, cosine) train once, and
the report at the end covers every run under --out, of either table. --methods picks among
the table's methods.

Every run is one `python -m sdrun +experiment=cifar100/<model>_<method> seed=<s>` in its own
fixed directory, OUT/cifar100/<model>/<method>/seed<s>, so a second `make reproduce` knows
what is done: a run whose summary.json says complete is skipped, a run with a checkpoint
but no summary (killed) is resumed, anything else starts. Runs go seed by seed, so after the
first pass over the networks there is a whole table with one seed. --jobs N runs N at a
time (each run's output then goes to its reproduce.log); their wall-clock times then
include the contention, so time the table with --jobs 1.

`born-again` is a chain: generation 1 is the `cosine` run of the same network and seed,
generation k trains `cifar100/<model>_kd` with generation k-1 as its teacher (--generations).
Generation k >= 2 trains with its own seed, derived from the chain's seed and k
(`generation_seed`): with the teacher's seed it would start from the teacher's initial weights
and see its batches, which is not a born-again network. Its folder is named by the chain's seed
(`born-again-g2/seed0`) and its summary.json records both (`seed`, `root_seed`), so the report
pairs the chain with the other methods of seed 0.

--smoke writes a tiny CIFAR-100-format data set into OUT/data and runs everything for 2
epochs on it: the whole pipeline (presets, cycles, teachers, chains, resume, report) in
minutes on a CPU. Its numbers mean nothing.

    python scripts/reproduce.py --models resnet56 --seeds 1
    python scripts/reproduce.py --smoke --out /tmp/smoke
    python scripts/reproduce.py --table selfkd --methods "cosine ls" --seeds 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MODELS = ("resnet20", "resnet32", "resnet56", "resnet110", "densenet_bc100")
METHODS = ("sd", "cyclic", "cosine", "step", "born-again")  # the default table's
SELFKD = ("ls", "tfkd", "cskd", "pskd", "dlb", "byot")  # each is preset cifar100/<model>_<name>
TABLES = {  # each table's methods, in the order they run for a network and seed
    "paper": METHODS,
    "selfkd": ("sd", "cyclic", "cosine", *SELFKD),
}
DEFAULT_TABLE = "paper"
CYCLIC = {"sd", "cyclic"}  # methods whose presets split the run into cycles
DATASET = "cifar100"
SMOKE_DATA = {"n_train": 128, "n_test": 100}
SMOKE_EPOCHS = 2


@dataclass(frozen=True)
class Job:
    model: str
    method: str  # sd | cyclic | cosine | step | born-again-g<k> | one of SELFKD
    seed: int
    run_dir: Path
    preset: str
    overrides: tuple[str, ...] = ()
    cyclic: bool = False


def plan(
    models: list[str], methods: list[str], seeds: list[int], generations: int, out: Path
) -> list[Job]:
    """Every run to have, in order: seed-major, and each chain after its first generation."""
    jobs: dict[Path, Job] = {}
    for seed in seeds:
        for model in models:
            for method in methods:
                for job in _jobs_for(model, method, seed, generations, out):
                    jobs.setdefault(job.run_dir, job)
    return list(jobs.values())


def generation_seed(root: int, generation: int) -> int:
    """The seed of generation `generation` of the born-again chain with seed `root` (generation
    1 keeps `root`): hashed, so no two (root, generation) pairs share a seed in practice."""
    if generation == 1:
        return root
    digest = hashlib.sha256(f"sdrun-born-again:{root}:{generation}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & (2**31 - 1)


def _jobs_for(model: str, method: str, seed: int, generations: int, out: Path) -> list[Job]:
    def job(name: str, preset: str, *overrides: str) -> Job:
        run_dir = out / DATASET / model / name / f"seed{seed}"
        preset = f"{DATASET}/{model}_{preset}"
        return Job(model, name, seed, run_dir, preset, overrides, cyclic=name in CYCLIC)

    if method != "born-again":
        return [job(method, method)]
    chain = [job("cosine", "cosine")]  # generation 1: trained from scratch
    for k in range(2, generations + 1):
        teacher = chain[-1].run_dir
        own = (f"seed={generation_seed(seed, k)}", f"root_seed={seed}")
        chain.append(job(f"born-again-g{k}", "kd", f"distill.teacher_checkpoint={teacher}", *own))
    return chain


def state(run_dir: Path) -> str:
    """done (complete summary), resume (a checkpoint, no summary) or new."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            if json.loads(summary.read_text()).get("complete") is True:
                return "done"
        except ValueError:
            pass  # a damaged summary: the checkpoint decides
    return "resume" if (run_dir / "checkpoints" / "last.pt").is_file() else "new"


def command(job: Job, how: str, extra: list[str]) -> list[str]:
    sdrun = [sys.executable, "-m", "sdrun"]
    if how == "resume":  # sdrun re-applies the run's own overrides from .hydra/overrides.yaml
        return [*sdrun, f"resume={job.run_dir}"]
    own_seed = any(o.startswith("seed=") for o in job.overrides)  # a chain's generation
    return [
        *sdrun,
        f"+experiment={job.preset}",
        *([] if own_seed else [f"seed={job.seed}"]),
        f"hydra.run.dir={job.run_dir}",
        f"logger.group={wandb_group(job)}",  # the table's runs together in wandb
        *job.overrides,
        *extra,
    ]


def wandb_group(job: Job) -> str:
    """`<out folder name>/cifar100`: one wandb group per table (run_dir is OUT/DATASET/...)."""
    return f"{job.run_dir.parents[3].name}/{DATASET}"


def smoke_overrides(job: Job, data_root: Path) -> list[str]:
    """Tiny data, 2 epochs (2 cycles of 1 for the cyclic methods), no wandb."""
    args = [
        f"dataset.root={data_root}",
        "dataset.download=false",
        "dataset.batch_size=32",
        "dataset.eval_batch_size=100",
        f"schedule.epochs={SMOKE_EPOCHS}",
        "logger=none",
    ]
    if job.cyclic:
        args.append("schedule.cycle_length=1")
    return args


def write_smoke_data(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A small CIFAR-100 folder in the official layout, with classes a net can tell apart:
    each class is a fixed blocky colour pattern, each image that pattern plus noise."""
    import torch  # here, not at the top: a bad argument is refused without loading torch

    from sdrun.data import write_cifar

    if (root / "cifar-100-python" / "test").is_file():
        return root
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(100, 3, 4, 4, generator=g) * 200 + 28).repeat_interleave(8, 2)
    patterns = patterns.repeat_interleave(8, 3)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 100
        noise = torch.randn(n, 3, 32, 32, generator=g) * 24
        return (patterns[labels] + noise).round().clamp(0, 255).to(torch.uint8), labels

    train_x, train_y = split(n_train)
    test_x, test_y = split(n_test)
    names = [f"class_{i:02d}" for i in range(100)]
    write_cifar(root, DATASET, train_x, train_y, test_x, test_y, names)
    return root


def waves(jobs: list[Job]) -> list[list[Job]]:
    """Jobs that can run side by side: a chain's generation k waits for generation k-1."""
    by_generation: dict[int, list[Job]] = {}
    for job in jobs:
        k = int(job.method.rsplit("-g", 1)[1]) if job.method.startswith("born-again-g") else 1
        by_generation.setdefault(k, []).append(job)
    return [by_generation[k] for k in sorted(by_generation)]


def run_one(job: Job, cmd: list[str], side_by_side: int) -> int:
    """Run one sdrun; side by side with others its output goes to the run's reproduce.log."""
    if side_by_side == 1:
        return subprocess.run(cmd, check=False).returncode
    # Share the cores: N torch processes with a thread per core each slow each other down
    # severalfold on a CPU. An OMP_NUM_THREADS of the user's own is kept.
    threads = str(max(1, (os.cpu_count() or 1) // side_by_side))
    env = {"OMP_NUM_THREADS": threads, **os.environ}
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with open(job.run_dir / "reproduce.log", "a") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    return proc.returncode


def run_all(
    jobs: list[Job], extra: list[str], smoke_root: Optional[Path], jobs_at_once: int, dry_run: bool
) -> int:
    """Run what is not done yet; returns 1 after the first failure (no new run starts), else 0."""
    # One at a time: the plan's order (seed by seed, each chain in line). Side by side: in
    # waves, so that no generation starts before its teacher has finished.
    order = waves(jobs) if jobs_at_once > 1 else [jobs]
    width = len(str(len(jobs)))
    heads = {job: f"[{i:>{width}}/{len(jobs)}] {job.model} {job.method} seed {job.seed}"
             for i, job in enumerate((j for wave in order for j in wave), start=1)}  # fmt: skip
    failed: list[tuple[Job, list[str], int]] = []

    def launch(job: Job) -> None:
        if failed:  # after a failure, no new run starts
            return
        how = state(job.run_dir)
        if how == "done":
            print(f"{heads[job]}: done, skipped", flush=True)
            return
        cmd = command(job, how, extra + (smoke_overrides(job, smoke_root) if smoke_root else []))
        print(f"{heads[job]}: {how} -> {job.run_dir}", flush=True)
        if dry_run:
            print("    " + " ".join(cmd[1:]), flush=True)
            return
        start = time.monotonic()
        code = run_one(job, cmd, jobs_at_once)
        if code != 0:
            failed.append((job, cmd, code))
        else:
            print(f"{heads[job]}: finished in {time.monotonic() - start:.0f} s", flush=True)

    for wave in order:
        with ThreadPoolExecutor(max_workers=jobs_at_once) as pool:
            list(pool.map(launch, wave))
        if failed:
            job, cmd, code = failed[0]
            log = job.run_dir / ("reproduce.log" if jobs_at_once > 1 else "sdrun.log")
            print(f"reproduce: run failed (exit {code}): {' '.join(cmd[1:])}\n"
                  f"reproduce: its log: {log}; fix the cause and run make reproduce again: "
                  "finished runs are kept", file=sys.stderr)  # fmt: skip
            return 1
    return 0


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


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    tables = "; ".join(f"{name}: {' '.join(methods)}" for name, methods in TABLES.items())
    parser.add_argument(
        "--table", default="", help=f"default {DEFAULT_TABLE}; the tables' methods: {tables}"
    )
    parser.add_argument("--models", default="", help=f"default: all of {', '.join(MODELS)}")
    parser.add_argument("--methods", default="", help="default: all of the table's")
    parser.add_argument("--seeds", default="", help="a count (3: seeds 0,1,2) or a list (0,2)")
    parser.add_argument("--generations", type=int, default=2, help="born-again chain length")
    parser.add_argument("--out", default="", help="default: outputs/reproduce[-smoke]")
    parser.add_argument("--smoke", action="store_true", help="tiny data and epochs, on the CPU")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs, run nothing")
    parser.add_argument("overrides", nargs="*", help="extra sdrun overrides for new runs")
    args = parser.parse_args(argv)
    try:
        table, table_methods = parse_table(args.table)
        models = parse_names(args.models, MODELS, "model")
        methods = parse_names(args.methods, table_methods, "method", f" in table {table}")
        seeds = parse_seeds(args.seeds or ("1" if args.smoke else "3"))
    except ValueError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or ("outputs/reproduce-smoke" if args.smoke else "outputs/reproduce"))
    out = out.expanduser().resolve()
    jobs = plan(models, methods, seeds, args.generations, out)
    smoke_root = out / "data" if args.smoke else None
    if smoke_root and not args.dry_run:
        write_smoke_data(smoke_root, **SMOKE_DATA)
    failed = run_all(jobs, args.overrides, smoke_root, max(1, args.jobs), args.dry_run)
    if not args.dry_run and any(state(j.run_dir) != "new" for j in jobs):
        from sdrun.errors import SdrunError
        from sdrun.report import write_report

        try:  # a plot per run: the paper table has tens of runs, and its folder is read whole
            report = write_report([out], out / "report", run_plots=True)
        except SdrunError as err:  # a report folder sdrun-report may not write into: one line
            print(f"reproduce: error: {err}", file=sys.stderr)
            return failed or 2
        n_runs = sum(len(r.runs) for r in report.rows)
        print(f"reproduce: report of {n_runs} complete runs: {out / 'report' / 'RESULTS.md'}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
