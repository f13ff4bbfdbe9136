"""A stopped search continues (sdrun/sweeps/search.py): the same command with hydra.sweep.dir=<its
folder> re-runs no finished trial, trains a killed trial on from its checkpoint, numbers new
trials after the old ones; a different search is refused there without touching its
sweep.yaml; a search whose every trial failed ends with one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import yaml
from conftest import SEARCH
from helpers import complete, sdrun_here, search_trials, wandb_env

STUDY = "sd_optuna"  # conf/hparams_search/sd_optuna.yaml


def storage(sweep_dir: Path) -> optuna.storages.JournalStorage:
    """The search's study: the journal file in its sweep folder."""
    backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal"))
    return optuna.storages.JournalStorage(backend)


def job_num(trial: Path) -> int:
    return yaml.safe_load((trial / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"]


def search_args(root: Path, sweep_dir: Path, *extra: str) -> list[str]:
    return ["-m", *SEARCH, f"dataset.root={root}", f"hydra.sweep.dir={sweep_dir}", *extra]


def kill_a_trial(sweep_dir: Path) -> None:
    """What a kill in trial 2 leaves: the study's trial 2 RUNNING (the values of trial 1), and
    its folder `2` with a checkpoint (trial 1's folder, renumbered; its last.pt is at the end
    of training, so the resumed trial only evaluates) and no summary."""
    study = optuna.load_study(study_name=STUDY, storage=storage(sweep_dir))
    done = study.trials[1]
    study.enqueue_trial(done.params)
    trial = study.ask(done.distributions)
    for key, value in done.user_attrs.items():
        trial.set_user_attr(key, value)
    assert trial.number == 2
    killed = sweep_dir / "2"
    shutil.copytree(sweep_dir / "1", killed)
    (killed / "summary.json").unlink()
    hydra_file = killed / ".hydra" / "hydra.yaml"
    hydra_cfg = yaml.safe_load(hydra_file.read_text())
    hydra_cfg["hydra"]["job"]["num"] = 2
    hydra_file.write_text(yaml.safe_dump(hydra_cfg))


def test_a_stopped_search_continues_where_it_stopped(search: Path, cifar100_root: Path, tmp_path):
    sweep_dir = tmp_path / "search"
    shutil.copytree(search, sweep_dir)
    kill_a_trial(sweep_dir)
    before = {name: (sweep_dir / name / "summary.json").stat().st_mtime_ns for name in "01"}
    args = search_args(cifar100_root, sweep_dir, "hydra.sweeper.n_trials=4")
    proc = sdrun_here(*args, cwd=tmp_path, env=wandb_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name=STUDY, storage=storage(sweep_dir))
    assert [t.number for t in study.trials] == [0, 1, 2, 3]  # 2 more, not 4 more
    states = [t.state.name for t in study.trials]
    assert states[:3] == ["FAIL", "COMPLETE", "COMPLETE"] and states[3] in ("FAIL", "COMPLETE")
    folders = {job_num(t): t for t in search_trials(sweep_dir)}
    assert sorted(folders) == [0, 1, 2, 3]  # job numbers go on from the study's
    for name in ("0", "1"):  # finished trials were not run again
        assert (sweep_dir / name / "summary.json").stat().st_mtime_ns == before[name]
    assert (
        complete(folders[2]) and "resumed after epoch 2" in (folders[2] / "sdrun.log").read_text()
    )
    summary = yaml.safe_load((folders[2] / "summary.json").read_text())
    assert study.trials[2].value == summary["val/top1"]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(t.value for t in study.trials if t.value is not None)
    assert yaml.safe_load((sweep_dir / "sweep.yaml").read_text())["n_trials"] == 4


def test_a_different_search_in_a_stopped_searchs_folder_is_refused(
    search: Path, cifar100_root: Path, tmp_path: Path
):
    sweep_dir = tmp_path / "search"
    shutil.copytree(search, sweep_dir)
    record = (sweep_dir / "sweep.yaml").read_bytes()
    args = search_args(cifar100_root, sweep_dir, "distill.kd_weight=2")
    proc = sdrun_here(*args, cwd=tmp_path, env=wandb_env(tmp_path))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "holds 2 trial(s) of another search" in line and "hydra.sweep.dir" in line
    assert (sweep_dir / "sweep.yaml").read_bytes() == record  # the stopped search's, kept
    assert len(search_trials(sweep_dir)) == 2


def test_a_search_whose_every_trial_failed_ends_with_one_line(cifar100_root: Path, tmp_path):
    args = search_args(cifar100_root, tmp_path / "search", "hydra.sweeper.n_trials=1",
                       "optim.lr=choice(1e30)", "logger=none")  # fmt: skip
    proc = sdrun_here(*args, cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("sdrun: error:")]
    assert line.startswith("sdrun: error: no trial of the search") and "1 fail" in line
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "ValueError" not in proc.stderr + proc.stdout
