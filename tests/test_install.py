"""A non-editable install (the wheel `pip install .` builds) runs from any directory: its
configs ship inside the package as sdrun.conf."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import CHECKOUT


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the built wheel, a folder it is installed into with `pip install --target`)."""
    work = tmp_path_factory.mktemp("install")
    # Built from a copy: a build leaves build/ behind, and stale files there would end up in
    # later wheels. No build isolation: tests never use the network (setuptools is in [dev]).
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "sdrun", "hydra_plugins", "conf"):
        copy = shutil.copytree if (CHECKOUT / name).is_dir() else shutil.copy
        copy(CHECKOUT / name, source / name, **_skip_caches(CHECKOUT / name))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--quiet", "-w", str(work / "dist"), str(source)]  # fmt: skip
    proc = subprocess.run(build, capture_output=True, text=True, timeout=300, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (work / "dist").glob("sdrun-*.whl")
    target = work / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
               str(target), str(wheel)]  # fmt: skip
    proc = subprocess.run(install, capture_output=True, text=True, timeout=300, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wheel, target


def _skip_caches(path: Path) -> dict:
    return {"ignore": shutil.ignore_patterns("__pycache__")} if path.is_dir() else {}


def run_installed(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m sdrun ...` with the installed copy first on the path, outside the checkout."""
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_the_wheel_holds_every_package_and_every_config(installed: tuple[Path, Path]):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [*CHECKOUT.glob("sdrun/**/*.py"), *CHECKOUT.glob("hydra_plugins/**/*.py")]
    packages = {p.parent.relative_to(CHECKOUT).as_posix() for p in sources}
    missing = {p for p in packages if f"{p}/__init__.py" not in names}
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    configs = {
        f"sdrun/{p.relative_to(CHECKOUT).as_posix()}" for p in CHECKOUT.glob("conf/**/*.yaml")
    }
    assert configs and configs <= names


def test_installed_sdrun_composes_and_trains_from_another_directory(
    installed: tuple[Path, Path], tmp_path: Path
):
    _, target = installed
    where = run_installed(
        target, "-c", "import sdrun.conf; print(sdrun.conf.__file__)", cwd=tmp_path
    )
    assert where.stdout.strip().startswith(str(target)), (
        where.stdout + where.stderr
    )  # not the checkout
    proc = run_installed(target, "-m", "sdrun", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distill:" in proc.stdout and "schedule:" in proc.stdout
    run_dir = tmp_path / "run"
    fake = ["dataset=fake", "dataset.num_train=64", "dataset.num_test=32", "dataset.num_classes=10",
            "dataset.batch_size=32", "model=resnet20", "schedule.epochs=2",
            "schedule.cycle_length=1", "logger=none", f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = run_installed(target, "-m", "sdrun", *fake, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "summary.json").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
