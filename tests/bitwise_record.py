"""Record what tests/test_bitwise.py compares: tiny deterministic CPU runs of every training
path (sdrun: sd, none on SD's cycles, a step schedule, kd from a saved teacher, the
self-distillation family on cosine; sdrun-transfer: detection and segmentation), reduced to a
sha256 of the final weights and every metrics.jsonl value except timings.

    .venv/bin/python tests/bitwise_record.py     # rewrites tests/data/bitwise_reference.json

Re-record only when a change is meant to change sdrun's numbers, and say so in the commit.
Floats are stored as `float.hex()` (exact); the comparison is bitwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "bitwise_reference.json"
# Timings and throughput differ between any two runs; everything else must not.
VARYING = ("time/", "throughput/")

# Two 32-image steps per epoch, 2 or 3 epochs. SD: cycles of one epoch, so the snapshot taken
# at epoch 1 teaches epoch 2 and is refreshed in place for epoch 3.
SMALL = ("dataset.download=false", "dataset.limit_train=64", "dataset.limit_test=32",
         "dataset.batch_size=32", "dataset.eval_batch_size=32", "model=resnet20",
         "schedule.epochs=2", "schedule.lr_min=0.001", "optim.lr=0.05", "logger=none",
         "trainer.device=cpu", "trainer.deterministic=true", "trainer.log_every=1")  # fmt: skip
SDRUN_CASES: dict[str, tuple[str, ...]] = {
    "sd": ("distill=sd", "schedule=sd", "schedule.epochs=3", "schedule.cycle_length=1"),
    "none_cyclic": ("distill=none", "schedule=sd", "schedule.cycle_length=1"),
    "step": ("distill=none", "schedule=step"),
    # the teacher is the sd run's last.pt; its logits precomputed ahead (the other teacher path)
    "kd": ("distill=kd", "schedule=cosine", "trainer.teacher_precompute=32"),
    # the self-distillation family on the cosine schedule: every batch composition (indices,
    # same-class partners, the previous batch) and every method's per-sample state
    **{
        name: (f"distill={name}", "schedule=cosine")
        for name in ("ls", "tfkd", "cskd", "pskd", "dlb", "byot")
    },
}
TRANSFER_CASES: dict[str, tuple[str, ...]] = {
    "detection": ("task=detection",),
    "segmentation": ("task=segmentation",),
}
TRANSFER = ("backbone=scratch:resnet20", "dataset.download=false", "dataset.image_size=64",
            "dataset.max_size=96", "dataset.batch_size=2", "dataset.eval_batch_size=4",
            "dataset.limit_train=4", "dataset.limit_test=4", "dataset.num_workers=0",
            "schedule.epochs=2", "schedule.warmup_iters=2", "task.fpn_channels=32",
            "task.rois_per_image=64", "logger=none", "trainer.device=cpu",
            "trainer.deterministic=true", "trainer.log_every=1")  # fmt: skip


def weights_sha256(run_dir: Path) -> str:
    """sha256 over every tensor of the final model's state_dict, in its order (names too)."""
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def exact(value: Any) -> Any:
    """A JSON value with every float as its hex spelling (bitwise, NaN and inf included)."""
    if isinstance(value, float):
        return {"float": value.hex()}
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    return value


def outcome(run_dir: Path) -> dict[str, Any]:
    """What one run's numbers are: flat `key -> exact value`, keys naming the epoch."""
    out: dict[str, Any] = {"weights_sha256": weights_sha256(run_dir)}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    for i, line in enumerate(lines):
        for key, value in json.loads(line).items():
            if not key.startswith(VARYING):
                out[f"metrics[{i}].{key}"] = exact(value)
    out["metrics.lines"] = len(lines)
    return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """CPU sums in one fixed order, whatever the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sdrun(args: list[str], work: Path) -> None:
    sys.path.insert(0, str(HERE))
    from helpers import sdrun_here

    result = sdrun_here(*args, cwd=work)
    if result.returncode != 0:
        raise RuntimeError(f"sdrun {' '.join(args)} failed:\n{result.stderr[-3000:]}")


def _transfer(args: list[str], work: Path) -> None:
    from sdrun.transfer.cli import main

    saved = sys.argv
    sys.argv = ["sdrun-transfer", *args]
    try:
        main()
    except SystemExit as stop:
        if stop.code:
            raise RuntimeError(f"sdrun-transfer {' '.join(args)} exited {stop.code}") from None
    finally:
        sys.argv = saved


def record_all(work: Path, cifar_root: Path, voc_root: Path) -> dict[str, dict[str, Any]]:
    """Run every case under `work` (fresh folders); {case: outcome}."""
    results: dict[str, dict[str, Any]] = {}
    with one_thread():
        for name, extra in SDRUN_CASES.items():
            run_dir = work / name
            args = [*SMALL, f"dataset.root={cifar_root}", *extra, f"hydra.run.dir={run_dir}"]
            if name == "kd":
                args.append(f"distill.teacher_checkpoint={work / 'sd'}")
            _sdrun(args, work)
            results[name] = outcome(run_dir)
        for name, extra in TRANSFER_CASES.items():
            run_dir = work / name
            args = [*TRANSFER, f"dataset.root={voc_root}", *extra, f"hydra.run.dir={run_dir}"]
            _transfer(args, work)
            results[name] = outcome(run_dir)
    return results


def main() -> None:
    sys.path.insert(0, str(HERE))
    from helpers import write_tiny_cifar

    from sdrun.transfer.tiny_voc import write_tiny_voc

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # the same data as the session fixtures `cifar100_root` and `voc_root` (seeded)
        cifar = write_tiny_cifar(tmp_path / "cifar100")
        voc = write_tiny_voc(tmp_path / "voc")
        work = tmp_path / "runs"
        work.mkdir()
        results = record_all(work, cifar, voc)
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}: {', '.join(results)}")


if __name__ == "__main__":
    main()
