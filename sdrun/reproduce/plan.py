"""The table's runs: which (network, method, seed) runs there are, in which folder, with which
command, and how far each one got.

Every run is one `python -m sdrun +experiment=cifar100/<model>_<method> seed=<s>` in its own
fixed directory, OUT/cifar100/<model>/<method>/seed<s>, so a second `make reproduce` knows what
is done: a run whose summary.json says complete is skipped, a run with a checkpoint but no
summary (killed) is resumed, anything else starts. Runs go seed by seed.

`born-again` is a chain: generation 1 is the `cosine` run of the same network and seed,
generation k trains `cifar100/<model>_kd` with generation k-1 as its teacher. Generation k >= 2
trains with its own seed, derived from the chain's seed and k (`generation_seed`): with the
teacher's seed it would start from the teacher's initial weights and see its batches, which is
not a born-again network. Its folder is named by the chain's seed (`born-again-g2/seed0`) and
its summary.json records both (`seed`, `root_seed`), so the report pairs the chain with the
other methods of seed 0.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sdrun.trust import files

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
    teacher: Optional[Path] = None  # a chain's generation k >= 2: generation k-1's run dir

    @property
    def name(self) -> str:
        return f"{self.model} {self.method} seed {self.seed}"


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
    def job(name: str, preset: str, *overrides: str, teacher: Optional[Path] = None) -> Job:
        run_dir = out / DATASET / model / name / f"seed{seed}"
        preset = f"{DATASET}/{model}_{preset}"
        return Job(model, name, seed, run_dir, preset, overrides, name in CYCLIC, teacher)

    if method != "born-again":
        return [job(method, method)]
    chain = [job("cosine", "cosine")]  # generation 1: trained from scratch
    for k in range(2, generations + 1):
        teacher = chain[-1].run_dir
        own = (f"seed={generation_seed(seed, k)}", f"root_seed={seed}")
        chain.append(
            job(f"born-again-g{k}", "kd", f"distill.teacher_checkpoint={teacher}", *own,
                teacher=teacher)
        )  # fmt: skip
    return chain


def state(run_dir: Path) -> str:
    """done (complete summary), resume (a checkpoint, no summary) or new."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            if files.read_json(summary).get("complete") is True:
                return "done"
        except (OSError, ValueError, AttributeError):
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
