"""`make reproduce-transfer`: fine-tune the backbones of a finished `make reproduce` tree (or
given backbones) on PASCAL VOC detection and segmentation over seeds, then write the report.

Backbones: every complete sdrun run under --from (default outputs/reproduce) whose network
and method are selected (--models, --methods: the report's method names, e.g. sd, cosine,
born-again-g2), and/or --backbones (run directories, checkpoints, timm:NAME, scratch:NAME).
Every backbone x task x seed is one `python -m sdrun.transfer` run in its own fixed folder,
OUT/<task>/<network>/<pre-training>/<backbone seed>_seed<seed> (OUT defaults to FROM/transfer),
so running it again skips finished runs and resumes killed ones (as `make reproduce` does).

Seeds: by default each run backbone is fine-tuned with its own pre-training seed (SD's seed-s
backbone and the baseline's seed-s backbone are then paired by seed in the report), and timm /
scratch backbones with every such seed; --seeds 0,1,2 fine-tunes every backbone with each.

--smoke writes a tiny VOC tree into OUT/voc and fine-tunes for 2 epochs on a handful of 64 px
images: the whole pipeline in a minute on a CPU; its numbers mean nothing.

    python scripts/reproduce_transfer.py --from outputs/reproduce --methods sd,cosine
    python scripts/reproduce_transfer.py --backbones timm:resnet101 --tasks detection --seeds 0
    python scripts/reproduce_transfer.py --smoke --backbones outputs/reproduce-smoke/.../seed0
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from reproduce import parse_seeds, run_one, state  # the pretraining table's runner, reused

TASKS = ("detection", "segmentation")
SMOKE_EPOCHS = 2
SMOKE = [  # tiny images, a few of them, a small detector head; deterministic on the CPU
    "dataset.download=false", "dataset.image_size=64", "dataset.max_size=96",
    "dataset.batch_size=2", "dataset.eval_batch_size=4", "dataset.limit_train=4",
    "dataset.limit_test=4", "dataset.num_workers=0", f"schedule.epochs={SMOKE_EPOCHS}",
    "schedule.warmup_iters=2", "schedule.eval_every=1", "task.fpn_channels=32",
    "task.rois_per_image=64", "logger=none", "trainer.deterministic=true",
]  # fmt: skip


@dataclass(frozen=True)
class Backbone:
    spec: str  # what sdrun-transfer's backbone= gets
    model: str
    method: str  # sd, cosine, ..., timm, scratch
    seed: Optional[int]  # pre-training seed (None for timm / scratch)


@dataclass(frozen=True)
class Job:
    task: str
    backbone: Backbone
    seed: int
    run_dir: Path


def find_backbones(root: Path, models: list[str], methods: list[str]) -> list[Backbone]:
    """Complete sdrun runs under `root` (transfer runs left out), by network and method."""
    from sdrun.report.scan import load_runs
    from sdrun.report.transfer import split_runs

    runs, _, _ = load_runs([root])
    runs, _ = split_runs(runs)
    found = [
        Backbone(str(r.path), r.model, r.method, r.seed)
        for r in runs
        if r.complete and (not models or r.model in models) and (not methods or r.method in methods)
    ]
    return sorted(found, key=lambda b: (b.model, b.method, str(b.seed), b.spec))


def backbone_folders(source: Path, backbones: list[Backbone]) -> list[Path]:
    """The folders holding the backbones' pre-training runs: the source tree, and each given
    run (a checkpoint's run folder is two levels up: <run>/checkpoints/<file>.pt)."""
    folders = [source] if source.is_dir() else []
    for backbone in backbones:
        if backbone.method not in ("timm", "scratch"):
            path = Path(backbone.spec)
            folders.append(path if path.is_dir() else path.parent.parent)
    return folders


def given_backbone(spec: str) -> Backbone:
    """A --backbones entry: timm:/scratch:NAME, or a run directory / checkpoint."""
    for kind in ("timm", "scratch"):
        if spec.startswith(f"{kind}:"):
            return Backbone(spec, spec.split(":", 1)[1], kind, None)
    from sdrun.transfer.backbone import open_backbone

    opened = open_backbone(spec)  # one-line errors for a path that is not a backbone
    return Backbone(str(Path(spec).resolve()), opened.model, opened.method, opened.seed)


def plan(backbones: list[Backbone], tasks: list[str], seeds: Optional[list[int]],
         out: Path) -> list[Job]:  # fmt: skip
    """Every run, seed-major so that one pass gives a whole table with one seed."""
    own = sorted({b.seed for b in backbones if b.seed is not None}) or [0]

    def seeds_of(backbone: Backbone) -> list[int]:
        if seeds is not None:
            return seeds
        return own if backbone.seed is None else [backbone.seed]

    jobs = []
    for backbone in backbones:
        tag = "pretrained" if backbone.seed is None else f"b{backbone.seed}"
        for seed in seeds_of(backbone):
            for task in tasks:
                folder = out / task / backbone.model / backbone.method / f"{tag}_seed{seed}"
                jobs.append(Job(task, backbone, seed, folder))
    jobs.sort(key=lambda j: (j.seed, j.task, j.backbone.model, j.backbone.method))
    unique: dict[Path, Job] = {}
    for job in jobs:  # the same backbone named twice runs once; two backbones never share
        other = unique.setdefault(job.run_dir, job)
        if other.backbone.spec != job.backbone.spec:
            raise ValueError(
                f"{other.backbone.spec} and {job.backbone.spec} would both fine-tune into "
                f"{job.run_dir} (same model, method and seed): pass one of them, or use --out "
                "to give each its own table"
            )
    return list(unique.values())


def command(job: Job, how: str, extra: list[str]) -> list[str]:
    transfer = [sys.executable, "-m", "sdrun.transfer"]
    if how == "resume":
        return [*transfer, f"resume={job.run_dir}"]
    return [*transfer, f"task={job.task}", f"backbone={job.backbone.spec}", f"seed={job.seed}",
            f"hydra.run.dir={job.run_dir}", *extra]  # fmt: skip


def run_all(jobs: list[Job], extra: list[str], at_once: int, dry_run: bool) -> int:
    """Run what is not done; after the first failure no new run starts; returns 1 if one did."""
    failed: list[tuple[Job, int]] = []

    def launch(numbered: tuple[int, Job]) -> None:
        i, job = numbered
        head = (f"[{i}/{len(jobs)}] {job.task} {job.backbone.model} {job.backbone.method} "
                f"seed {job.seed}")  # fmt: skip
        how = state(job.run_dir)
        if failed or how == "done":
            print(f"{head}: {'done, skipped' if how == 'done' else 'not started'}", flush=True)
            return
        cmd = command(job, how, extra)
        print(f"{head}: {how} -> {job.run_dir}", flush=True)
        if dry_run:
            print("    " + " ".join(cmd[1:]), flush=True)
            return
        start = time.monotonic()
        code = run_one(job, cmd, at_once)  # type: ignore[arg-type]  (needs only .run_dir)
        if code:
            failed.append((job, code))
        else:
            print(f"{head}: finished in {time.monotonic() - start:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=at_once) as pool:
        list(pool.map(launch, enumerate(jobs, start=1)))
    if failed:
        job, code = failed[0]
        log = job.run_dir / ("reproduce.log" if at_once > 1 else "sdrun.log")
        print(
            f"reproduce-transfer: run failed (exit {code}): {job.run_dir}; its log: {log}; "
            "fix the cause and run it again: finished runs are kept",
            file=sys.stderr,
        )
        return 1
    return 0


def _names(text: str) -> list[str]:
    return text.replace(",", " ").split()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", default="", help="a make-reproduce tree")
    parser.add_argument("--backbones", default="", help="run dirs, .pt, timm:NAME, scratch:NAME")
    parser.add_argument("--models", default="", help="networks to take from --from (all)")
    parser.add_argument("--methods", default="", help="methods to take from --from (all)")
    parser.add_argument("--tasks", default="", help=f"default: {','.join(TASKS)}")
    parser.add_argument("--seeds", default="", help="fine-tuning seeds (default: the backbone's)")
    parser.add_argument("--out", default="", help="default: FROM/transfer")
    parser.add_argument("--smoke", action="store_true", help="tiny VOC and epochs, on the CPU")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs, run nothing")
    parser.add_argument("overrides", nargs="*", help="extra sdrun-transfer overrides")
    args = parser.parse_args(argv)
    tasks = _names(args.tasks) or list(TASKS)
    try:
        if any(t not in TASKS for t in tasks):
            raise ValueError(f"tasks {args.tasks!r}: pick from {', '.join(TASKS)}")
        seeds = parse_seeds(args.seeds) if args.seeds else None
        source = Path(args.source or ("outputs/reproduce-smoke" if args.smoke else
                                      "outputs/reproduce")).expanduser().resolve()  # fmt: skip
        backbones = [given_backbone(s) for s in _names(args.backbones)]
        if args.source or not backbones:
            if not source.is_dir():
                raise ValueError(f"--from {source}: no such folder; run make reproduce first")
            backbones += find_backbones(source, _names(args.models), _names(args.methods))
        if not backbones:
            raise ValueError(f"no complete backbone runs under {source} for those models/methods")
        out = Path(args.out).expanduser().resolve() if args.out else source / "transfer"
        jobs = plan(backbones, tasks, seeds, out)
    except Exception as err:  # argument and backbone errors: one line
        print(f"reproduce-transfer: error: {err}", file=sys.stderr)
        return 2
    extra = list(args.overrides)
    if args.smoke:
        from sdrun.transfer.tiny_voc import write_tiny_voc

        if not args.dry_run and not (out / "voc" / "VOCdevkit").is_dir():
            write_tiny_voc(out / "voc")
        extra = [*SMOKE, f"dataset.root={out / 'voc'}", *extra]
    failed = run_all(jobs, extra, max(1, args.jobs), args.dry_run)
    if not args.dry_run and any(state(j.run_dir) == "done" for j in jobs):
        from sdrun.errors import SdrunError
        from sdrun.report import write_report

        # the backbones' runs are read, only to know their recipes (the report reads nothing
        # outside the folders it is given)
        folders = backbone_folders(source, backbones)
        try:
            report = write_report([out], out / "report", context=folders)
        except SdrunError as err:  # a report folder sdrun-report may not write into: one line
            print(f"reproduce-transfer: error: {err}", file=sys.stderr)
            return failed or 2
        print(f"reproduce-transfer: report of {len(report.transfer_runs)} transfer runs: "
              f"{out / 'report' / 'RESULTS.md'}")  # fmt: skip
    return failed


if __name__ == "__main__":
    sys.exit(main())
