"""Adding a training method is one module: tests/extra_method.py, a method only the tests have,
is imported and nothing else is written for it. It then runs from the command line on the
schedule it declares, logs its own terms and keeps its state across a resume, is listed by
`--help` and by the bench's family, refuses a key it does not have in one line naming its
own, and gets report rows keyed on its settings (sdrun/methods/registry.py)."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from helpers import load_script, read_jsonl, sdrun_here, tiny_config

from sdrun.config import MethodSettings, validate
from sdrun.errors import ConfigError
from sdrun.methods import find_method, method_names, register_method, unregister_method
from sdrun.report import build_report


@pytest.fixture(scope="module")
def beta() -> Iterator[type]:
    """The test method, registered by importing its module (again after an earlier test's
    unregistering: the module is imported once per process)."""
    module = importlib.import_module("extra_method")
    if find_method("beta_test") is None:
        register_method(module.BetaPenalty)
    yield module.BetaPenalty
    unregister_method("beta_test")


def small(root: Path) -> list[str]:
    """Two epochs of one 32-image step of ResNet-20 on the CPU."""
    return [f"dataset.root={root}", "dataset.download=false", "dataset.limit_train=32",
            "dataset.limit_test=32", "dataset.batch_size=32", "dataset.eval_batch_size=32",
            "model=resnet20", "schedule.epochs=2", "schedule.lr_min=0.001", "optim.lr=0.05",
            "logger=none", "trainer.device=cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def beta_run(beta, cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of `distill=beta_test distill.beta=0.1` by the command line."""
    work = tmp_path_factory.mktemp("beta")
    run_dir = work / "run"
    args = [*small(cifar100_root), "distill=beta_test", "distill.beta=0.1"]
    proc = sdrun_here(*args, f"hydra.run.dir={run_dir}", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_the_new_method_runs_on_its_own_schedule_logs_its_terms_and_resumes_its_state(
    beta, beta_run: Path, tmp_path: Path
):
    run_dir = beta_run
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["distill"] == {"name": "beta_test", "beta": 0.1}  # its keys, nothing else
    assert config["schedule"]["name"] == "cosine"  # the family's schedule it declares
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert all(r["train/mean_logit"] is not None and r["train/ce"] > 0 for r in records)
    assert "train/kd" not in records[0]  # the columns are the method's
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["method"] == {"steps": 2}  # 2 epochs of one step
    beta.loaded.clear()
    # its saved overrides (distill=beta_test distill.beta=0.1) pass resume's checks, re-applied
    proc = sdrun_here(f"resume={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert beta.loaded == [{"steps": 2}]


def test_help_and_the_bench_list_the_new_method(beta, tmp_path: Path):
    proc = sdrun_here("--help", cwd=tmp_path)
    listed = next(line for line in proc.stdout.splitlines() if line.startswith("distill: "))
    assert "beta_test" in listed.split(" (")[0].removeprefix("distill: ").split(", ")
    bench = load_script("bench_methods")
    assert "beta_test" in bench.parse_methods("family")  # `make bench` times it


def test_a_key_the_new_method_lacks_is_refused_in_one_line_naming_its_keys(
    beta, cifar100_root: Path, tmp_path: Path
):
    proc = sdrun_here(*small(cifar100_root), "distill=beta_test", "distill.temperature=2",
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "distill.temperature" in line and "distill=beta_test" in line
    assert "distill.beta" in line  # what it does have
    assert not (tmp_path / "outputs").exists()  # refused before any run folder


def test_the_new_method_gets_report_rows_keyed_on_its_settings(
    beta, beta_run: Path, tmp_path: Path
):
    other = tmp_path / "beta_default"  # the run's folder as a run of the default beta wrote it
    shutil.copytree(beta_run, other)
    config = yaml.safe_load((other / ".hydra" / "config.yaml").read_text())
    config["distill"]["beta"] = 0.5
    (other / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    report = build_report([beta_run, other], tmp_path / "report")
    labels = sorted(row.label for row in report.rows)
    assert labels == ["beta_test (beta=0.1)", "beta_test (beta=0.5)"]


def test_the_shipped_methods_are_registered_and_settings_of_no_method_are_refused(
    tmp_path: Path,
):
    assert {"sd", "kd", "none", "ls", "tfkd", "cskd", "pskd", "dlb", "byot"} <= set(method_names())
    with pytest.raises(ConfigError, match="distill holds no training method's settings"):
        validate(tiny_config(tmp_path, distill=MethodSettings(name="nope")))
