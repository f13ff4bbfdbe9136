"""Test helpers: small CIFAR-format folders with something a tiny net can learn."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from sdrun.config import (
    Config,
    DatasetConfig,
    LoggerConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainerConfig,
)
from sdrun.data import write_cifar
from sdrun.methods import default_settings

NUM_CLASSES = {"cifar100": 100, "cifar10": 10}
CHECKOUT = Path(__file__).resolve().parent.parent
CONF = CHECKOUT / "conf"  # installed as the package sdrun.conf


def write_tiny_cifar(
    root: Path, name: str = "cifar100", n_train: int = 256, n_test: int = 128, seed: int = 0
) -> Path:
    """Write a small `name` folder (official layout) under `root`; returns `root`.

    Each class has its own blocky colour pattern (a random 3x4x4 grid scaled up to 32x32);
    an image is its class's pattern plus noise, so the classes can be told apart. Labels
    cycle through the classes in a shuffled order, so every class appears when n >= classes.
    """
    k = NUM_CLASSES[name]
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(k, 3, 4, 4, generator=g) * 200 + 28
    patterns = patterns.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
        noise = torch.randn(n, 3, 32, 32, generator=g) * 24
        x = (patterns[y] + noise).round().clamp(0, 255).to(torch.uint8)
        return x, y

    train_x, train_y = split(n_train)
    test_x, test_y = split(n_test)
    names = [f"class_{i:02d}" for i in range(k)]
    write_cifar(root, name, train_x, train_y, test_x, test_y, names)
    return Path(root)


def sdrun(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sdrun", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@dataclass
class Result:
    """What a finished `sdrun` command left: like subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def sdrun_here(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """Run the `sdrun` command in this process: the real CLI (argv handling, Hydra, validation,
    training), without the ~4 s a new interpreter takes to import torch. Use `sdrun` where the
    process boundary itself is tested (signals, exit codes from the OS, environment)."""
    from sdrun.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    os.environ.update(env or {})
    sys.argv = ["sdrun", *args]
    os.chdir(cwd)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 - what a crashing process would print
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return Result(code, out.getvalue(), err.getvalue())


def tiny(root: Path, *extra: str) -> list[str]:
    """A run of a few seconds: ResNet-20, 2 cycles of 2 epochs, a few batches per epoch."""
    return [
        f"dataset.root={root}", "dataset.download=false", "dataset.batch_size=32",
        "dataset.eval_batch_size=64", "model=resnet20", "schedule.epochs=4",
        "schedule.cycle_length=2", "schedule.lr_min=0.001", "optim.lr=0.05", "logger=none",
        "trainer.deterministic=true", *extra,
    ]  # fmt: skip


def complete(run_dir: Path) -> bool:
    """Whether a run folder holds a finished run (a diverged run writes a summary too)."""
    summary = run_dir / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("complete") is True


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wandb_env(folder: Path) -> dict[str, str]:
    """wandb's caches, settings and logs under `folder`, not in the home directory."""
    return {name: str(folder / name.lower()) for name in
            ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")}  # fmt: skip


def search_trials(sweep_dir: Path) -> list[Path]:
    """The run folders under a sweep or search directory (whatever their names)."""
    return sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml"))


def tiny_config(root: Path, **changes) -> Config:
    """ResNet-20, 2 epochs of one 32-image step, cosine without a teacher: the cheapest run
    with a checkpoint between two epochs."""
    cfg = Config(
        dataset=DatasetConfig(root=str(root), download=False, batch_size=32,
                              eval_batch_size=32, limit_train=32, limit_test=32),
        model=ModelConfig(name="resnet20"),
        schedule=ScheduleConfig(name="cosine", epochs=2, cycle_length=None, lr_min=0.001),
        distill=default_settings("none"),
        optim=OptimConfig(lr=0.05),
        trainer=TrainerConfig(device="cpu"),
        logger=LoggerConfig(name="none"),
    )  # fmt: skip
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def train(cfg: Config, run_dir: Path) -> dict:
    """One sdrun run in this process, with the `.hydra/config.yaml` Hydra would write."""
    import yaml
    from omegaconf import OmegaConf

    from sdrun.training.runner import run

    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return run(cfg, run_dir)


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module, scripts/ on sys.path while it loads (the transfer driver
    imports the pretraining one)."""
    folder = CHECKOUT / "scripts"
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module
