"""sdrun as users install it, run from another directory with no PYTHONPATH: the wheel
(`pip install .`; its configs ship inside the package as sdrun.conf) and the editable install
`make install` makes (`pip install -e .`). Each goes into a scratch venv of its own, whose
console scripts run as a user's would: every command, and a search (its sweeper is a Hydra
plugin, which Hydra's plugin discovery did not find in an editable install)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import CHECKOUT

PIP = ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed",
       "--quiet"]  # fmt: skip
PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
WHERE = "import sdrun.conf, hydra_plugins.sdrun_optuna as p; print(sdrun.conf.__file__, p.__file__)"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what the package is built from: a build leaves build/ and *.egg-info behind,
    which must not land in the checkout (stale files there would end up in later wheels)."""
    source = tmp_path_factory.mktemp("install") / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "sdrun", "hydra_plugins", "conf"):
        copy = shutil.copytree if (CHECKOUT / name).is_dir() else shutil.copy
        copy(CHECKOUT / name, source / name, **_skip_caches(CHECKOUT / name))
    return source


def _skip_caches(path: Path) -> dict:
    return {"ignore": shutil.ignore_patterns("__pycache__")} if path.is_dir() else {}


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    # No build isolation: tests never use the network (setuptools is in [dev]).
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--quiet", "-w", str(source.parent / "dist"), str(source)]  # fmt: skip
    proc = subprocess.run(build, capture_output=True, text=True, timeout=300, cwd=source.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (source.parent / "dist").glob("sdrun-*.whl")
    return wheel


def scratch_venv(where: Path) -> Path:
    """A venv without sdrun that sees this interpreter's installed packages (sdrun's
    dependencies, pip, setuptools) through a .pth file, as a venv with `pip install` of them
    would. Folders that hold an sdrun package are left out, so the install under test is the
    only sdrun there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    purelib = subprocess.run([str(where / "bin" / "python"), "-c", PURELIB], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
    packages = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")
                and not (Path(p) / "sdrun").exists()]  # fmt: skip
    Path(purelib, "zz_sdrun_dependencies.pth").write_text("\n".join(packages) + "\n")
    return where


def pip_install(venv: Path, *what: str) -> None:
    proc = subprocess.run([str(venv / "bin" / "python"), *PIP, *what], capture_output=True,
                          text=True, timeout=300, cwd=venv)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


KINDS = ("wheel", "editable")
# Two trials of two 1-epoch cycles on 32 fake images.
SEARCH = ("-m", "hparams_search=sd_optuna", "hydra.sweeper.n_trials=2", "dataset=fake",
          "dataset.num_train=48", "dataset.val_split=16", "dataset.num_test=16",
          "dataset.num_classes=4", "dataset.image_size=16", "dataset.batch_size=32",
          "model=resnet20", "schedule.epochs=2", "schedule.cycles=choice(2)",
          "logger=none")  # fmt: skip


def console_scripts() -> list[str]:
    """The console scripts pyproject.toml declares ([project.scripts])."""
    table = (CHECKOUT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    table = table.split("\n[", 1)[0]
    return re.findall(r"^([\w-]+)\s*=", table, flags=re.MULTILINE)


def install(kind: str, source: Path, wheel: Path) -> tuple[Path, Path]:
    """(a scratch venv with sdrun installed as `kind` says, the folder its code is in)."""
    venv = scratch_venv(source.parent / f"venv-{kind}")
    if kind == "wheel":
        pip_install(venv, str(wheel))
        return venv, venv
    pip_install(venv, "-e", str(source))  # what `make install` does
    return venv, source


@dataclass
class Installed:
    venv: Path
    code_dir: Path  # where its sdrun and hydra_plugins must be imported from
    sweep_dir: Path
    ran: dict[str, tuple[int, str, str]]  # "where", each script's --help, "search"


@pytest.fixture(scope="module")
def installed(source: Path, wheel: Path) -> dict[str, Installed]:
    """Both install kinds, and every command of the tests below run in each, all side by side
    (they are independent, and each mostly imports torch): from a folder of their own."""
    kinds = {kind: Installed(*install(kind, source, wheel), source.parent / f"search-{kind}",
                             {}) for kind in KINDS}  # fmt: skip
    started = {}
    for kind, it in kinds.items():
        cwd = source.parent / f"cwd-{kind}"
        cwd.mkdir()
        started[kind, "where"] = start(it.venv, "python", "-c", WHERE, cwd=cwd)
        for script in console_scripts():
            started[kind, script] = start(it.venv, script, "--help", cwd=cwd)
        started[kind, "search"] = start(it.venv, "sdrun", *SEARCH,
                                        f"hydra.sweep.dir={it.sweep_dir}", cwd=cwd)  # fmt: skip
    for (kind, what), proc in started.items():
        kinds[kind].ran[what] = finish(proc)
    return kinds


def start(venv: Path, command: str, *args: str, cwd: Path) -> subprocess.Popen:
    """One of the venv's console scripts (or its python), as a user runs it: from `cwd`,
    without PYTHONPATH. Started, not waited for."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(WANDB_SILENT="true", WANDB_MODE="disabled")
    return subprocess.Popen([str(venv / "bin" / command), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a started command."""
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def test_the_wheel_holds_every_package_and_every_config(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [*CHECKOUT.glob("sdrun/**/*.py"), *CHECKOUT.glob("hydra_plugins/**/*.py")]
    packages = {p.parent.relative_to(CHECKOUT).as_posix() for p in sources}
    missing = {p for p in packages if f"{p}/__init__.py" not in names}
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    configs = {
        f"sdrun/{p.relative_to(CHECKOUT).as_posix()}" for p in CHECKOUT.glob("conf/**/*.yaml")
    }
    assert configs and configs <= names


@pytest.mark.parametrize("kind", KINDS)
def test_every_console_script_starts_from_another_directory(installed, kind: str):
    it = installed[kind]
    code, out, err = it.ran["where"]
    assert code == 0, err[-3000:]
    for path in out.split():  # the install under test, not the checkout
        assert Path(path).is_relative_to(it.code_dir), path
    scripts = console_scripts()
    assert {"sdrun", "sdrun-report", "sdrun-transfer"} <= set(scripts)
    for script in scripts:
        code, out, err = it.ran[script]
        assert code == 0 and script in out, (script, err[-3000:])
    assert "hparams_search: sd_optuna" in it.ran["sdrun"][1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_search_runs_from_another_directory(installed, kind: str):
    """The search's sweeper must be found (before the fix, an editable install failed here with
    Hydra's "Unknown plugin class") and its two trials train."""
    it = installed[kind]
    code, out, err = it.ran["search"]
    assert code == 0, out[-3000:] + err[-3000:]
    summaries = sorted(it.sweep_dir.glob("*/summary.json"))
    assert len(summaries) == 2
    assert all(json.loads(s.read_text())["complete"] for s in summaries)
    results = yaml.safe_load((it.sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(json.loads(s.read_text())["val/top1"] for s in summaries)
