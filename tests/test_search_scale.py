"""The search at scale (sdrun/sweeps/): pruning through the run's own stop, the study as a journal
file Optuna's API (and so optuna-dashboard) opens, two `sdrun -m` processes on one study with a
killed trial between them, a tampered study refused before anything runs, and the best setting
retrained on seeds without a validation split as a report row. Studies are made with Optuna's
own API; trials are tiny runs on fake data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import complete, read_jsonl, sdrun_here
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from sdrun.report import write_report
from sdrun.sweeps import results
from sdrun.sweeps.retrain import main as retrain_main
from sdrun.sweeps.retrain import retrain_argv
from sdrun.sweeps.trials import FIXED_ATTR

STUDY = "sd_optuna"  # conf/hparams_search/sd_optuna.yaml
# The preset's space, as this search narrows it (schedule.cycles=choice(2)).
SPACE = {"distill.temperature": FloatDistribution(0.5, 8.0, log=True),
         "distill.kd_weight": FloatDistribution(0.0, 4.0),
         "schedule.cycles": CategoricalDistribution([2])}  # fmt: skip
FIXED = {"schedule.cycle_length": "null"}
PARAMS = {"distill.temperature": 2.0, "distill.kd_weight": 1.0, "schedule.cycles": 2}
# Two epochs (two 1-epoch cycles) of one 32-image step on 4-class fake data, trial n in folder n.
FAKE = ("hparams_search=sd_optuna", "dataset=fake", "dataset.num_train=48", "dataset.val_split=16",
        "dataset.num_test=16", "dataset.num_classes=4", "dataset.image_size=16",
        "dataset.batch_size=32", "model=resnet20", "schedule.epochs=2", "logger=none",
        "schedule.cycles=choice(2)", "hydra.sweep.subdir=${hydra.job.num}")  # fmt: skip


def journal(sweep_dir: Path) -> optuna.storages.JournalStorage:
    backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal"))
    return optuna.storages.JournalStorage(backend)


def new_study(sweep_dir: Path) -> optuna.Study:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(storage=journal(sweep_dir), study_name=STUDY, direction="maximize")


def add_done(study: optuna.Study, value: float) -> None:
    """A finished trial of this search's space, `value` at both epochs."""
    study.add_trial(optuna.trial.create_trial(
        params=PARAMS, distributions=SPACE, value=value, user_attrs={FIXED_ATTR: FIXED},
        intermediate_values={1: value, 2: value}))  # fmt: skip


def add_running(study: optuna.Study, changes: dict | None = None) -> optuna.Trial:
    """A RUNNING trial of the space (what a kill leaves): PARAMS' values, `changes` on top
    (queued first, as `enqueue_trial` lets anyone with the study do)."""
    study.enqueue_trial({**PARAMS, **(changes or {})}, skip_if_exists=False)
    trial = study.ask()
    for key, dist in SPACE.items():
        if isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(key, list(dist.choices))
        else:
            trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    trial.set_user_attr(FIXED_ATTR, FIXED)
    return trial


def job_num(folder: Path) -> int:
    return yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"]


def files_outside(root: Path, sweep_dir: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and not p.is_relative_to(sweep_dir)}  # fmt: skip


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A search's sweep folder: a study holding one finished trial at val/top1 100 every
    epoch, then two trials in one batch of n_jobs=2 under a median pruner that may prune after
    one finished trial: both lag at epoch 1."""
    work = tmp_path_factory.mktemp("pruned")
    sweep_dir = work / "search"
    add_done(new_study(sweep_dir), 100.0)
    proc = sdrun_here("-m", *FAKE, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
                      "hydra.sweeper.pruner.startup_trials=1", f"hydra.sweep.dir={sweep_dir}",
                      cwd=work)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sweep_dir


def test_a_pruned_trial_stops_after_its_checkpoint_and_is_pruned_in_the_study(pruned):
    sweep_dir = pruned
    study = optuna.load_study(study_name=STUDY, storage=journal(sweep_dir))  # as the dashboard
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, *[TrialState.PRUNED] * 2]
    for trial in study.trials[1:]:
        folder = sweep_dir / str(trial.number)
        assert job_num(folder) == trial.number  # trial n is job n, in its own folder
        (epoch,) = read_jsonl(folder / "metrics.jsonl")  # stopped after epoch 1 of 2
        assert trial.intermediate_values == {1: epoch["val/top1"]}  # reported every epoch
        assert (folder / "checkpoints" / "last.pt").is_file()  # written before it stopped
        assert not (folder / "summary.json").exists()
        log = (folder / "sdrun.log").read_text()
        assert "trial pruned: pruned by the search's median pruner" in log
        assert "after epoch 1, checkpoint written" in log
        assert trial.params.keys() == SPACE.keys() and trial.user_attrs == {FIXED_ATTR: FIXED}


def test_the_results_name_the_best_trial_and_the_report_counts_pruned_trials(pruned, tmp_path):
    sweep_dir = pruned
    record = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert record["best_trial"] == 0 and record["best_value"] == 100.0
    assert record["best_params"] == PARAMS and record["trials"] == {"complete": 1, "pruned": 2}
    write_report([sweep_dir], tmp_path / "report")
    section = (tmp_path / "report" / "RESULTS.md").read_text().split("## Search", 1)[1]
    assert "(2 pruned; 3 planned)" in section
    rows = [line for line in section.splitlines() if line.startswith(("| 1", "| 2"))]
    assert len(rows) == 2 and all("| pruned: pruned by the search's median" in r for r in rows)


def test_the_results_replace_a_link_never_writing_through_it(pruned, tmp_path: Path):
    """A received folder's optimization_results.yaml may be a link (the folder check refuses
    it when a search starts; the writer does not follow one either)."""
    study = optuna.load_study(study_name=STUDY, storage=journal(pruned))
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (tmp_path / "optimization_results.yaml").symlink_to(victim)
    results.write_results(tmp_path, study, study.best_trial)
    assert victim.read_text() == "mine\n"
    written = tmp_path / "optimization_results.yaml"
    assert not written.is_symlink() and yaml.safe_load(written.read_text())["best_trial"] == 0


def test_the_best_setting_retrains_on_seeds_without_a_validation_split(pruned, tmp_path):
    sweep_dir = pruned
    argv = retrain_argv(sweep_dir, 2, [])
    assert "dataset.val_split=0" in argv and "seed=0,1" in argv
    assert not any(a.startswith(("hparams_search", "hydra.sweeper")) for a in argv)
    proc = sdrun_here(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    best = Path(f"{sweep_dir}-best")
    runs = sorted(p.parent for p in best.glob("*/summary.json"))
    assert len(runs) == 2 and all(complete(r) for r in runs)
    for run in runs:
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert config["dataset"]["val_split"] == 0 and config["distill"]["temperature"] == 2.0
        assert config["distill"]["kd_weight"] == 1.0 and config["schedule"]["cycles"] == 2
        assert "val/top1" not in json.loads((run / "summary.json").read_text())
    write_report([best], tmp_path / "report")
    text = (tmp_path / "report" / "RESULTS.md").read_text()
    (row,) = [line for line in text.splitlines() if "chosen on the validation split" in line]
    assert row.startswith("| resnet20 | sd, chosen on the validation split |")
    assert "| 2 |" in row  # one row of both seeds


@pytest.mark.parametrize("change,says", [
    ({"distill.temperature": 100.0}, "distill.temperature=100.0, which is outside"),
    ({"distill.kd_weight": "${oc.env:HOME}"}, "distill.kd_weight='${oc.env:HOME}'"),
])  # fmt: skip
def test_retrain_takes_only_values_of_the_space_from_the_results(
    pruned, tmp_path: Path, capsys, change, says
):
    sweep_dir = pruned
    copy = tmp_path / "search"
    copy.mkdir()
    (copy / "sweep.yaml").write_bytes((sweep_dir / "sweep.yaml").read_bytes())
    record = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    record["best_params"].update(change)
    (copy / "optimization_results.yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(SystemExit) as stop:
        retrain_main([str(copy), "--seeds", "1"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("sdrun: error: ") and says.split(",")[0] in line
    assert not Path(f"{copy}-best").exists()


@pytest.mark.filterwarnings("ignore:Fixed parameter")  # Optuna's, on the values queued here
@pytest.mark.parametrize("case", ["hydra key", "out of range", "interpolation", "user attr",
                                  "queued"])  # fmt: skip
def test_a_tampered_study_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path, case):
    """A received search whose study holds what the search never draws: a RUNNING trial (which
    a continuation would run again) with a Hydra setting, a value outside the space or an
    interpolation, a user attribute, or a queued trial with a value outside the space."""
    sweep_dir, victim = tmp_path / "search", tmp_path / "victim.txt"
    study = new_study(sweep_dir)
    if case == "hydra key":
        trial = add_running(study)
        trial.suggest_categorical("hydra.job_logging.handlers.file.filename", [str(victim)])
    elif case == "out of range":
        add_running(study, {"distill.kd_weight": 1e9})
    elif case == "interpolation":
        trial = study.ask()
        trial.suggest_categorical("distill.temperature", ["${oc.env:HOME}"])
    elif case == "user attr":
        add_running(study).set_user_attr("hydra.run.dir", str(tmp_path))
    else:
        study.enqueue_trial({**PARAMS, "distill.temperature": 100.0})
    before = files_outside(tmp_path, sweep_dir)
    proc = sdrun_here("-m", *FAKE, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}",
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("sdrun: error: trial 0 of the study in ") and "hydra.sweep.dir" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not victim.exists() and files_outside(tmp_path, sweep_dir) == before
    assert not list(sweep_dir.glob("*/.hydra"))  # no job started


def start_worker(args: list[str], cwd: Path) -> tuple[subprocess.Popen, list[str], threading.Event]:
    """`sdrun` in a process of its own; its output lines, and an event set once it has opened
    the study (then this process starts its own worker: the two overlap)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"WANDB_SILENT": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "sdrun", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    lines: list[str] = []
    opened = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if f"study {STUDY} in " in line:
                opened.set()
        opened.set()  # it ended: the assertions below say how

    threading.Thread(target=read, daemon=True).start()
    return proc, lines, opened


def test_two_processes_share_a_study_and_one_of_them_reruns_its_killed_trial(tmp_path: Path):
    """Two finished trials and one a kill left RUNNING before its first checkpoint; two `sdrun
    -m` processes started at once run it and a new trial, each once, in its own folder."""
    sweep_dir = tmp_path / "search"
    study = new_study(sweep_dir)
    add_done(study, 50.0)
    add_done(study, 60.0)
    add_running(study)
    args = ["-m", *FAKE, "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner.name=none",
            f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    other, lines, opened = start_worker(args, tmp_path)
    assert opened.wait(timeout=300), "".join(lines)[-3000:]  # it has the study open
    here = sdrun_here(*args, cwd=tmp_path)  # this process is the second one
    assert other.wait(timeout=300) == 0 and here.returncode == 0, "".join(lines)[-3000:]
    outputs = ["".join(lines), here.stdout + here.stderr]
    study = optuna.load_study(study_name=STUDY, storage=journal(sweep_dir))
    assert [t.number for t in study.trials] == [0, 1, 2, 3]  # n_trials counts the study
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    folders = sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/hydra.yaml"))
    assert [f.name for f in folders] == ["2", "3"]
    for folder in folders:
        assert job_num(folder) == int(folder.name) and complete(folder)
        assert len(read_jsonl(folder / "metrics.jsonl")) == 2  # trained once: 2 epochs
        summary = json.loads((folder / "summary.json").read_text())
        assert study.trials[int(folder.name)].value == summary["val/top1"]
    assert "".join(outputs).count("#2 : ") == 1  # the killed trial 2 ran in one process only
