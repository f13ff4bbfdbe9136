"""Hyperparameter search (hparams_search=sd_optuna): refused without a validation split, the
space as the command line narrows it, and one real Optuna search of two tiny trials (one of
which diverges; conftest.py `search`) read back from its folders, wandb runs and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import complete, sdrun_here, search_trials
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from wandb_records import by_type

from sdrun.commandline.overrides import CONFIG_PACKAGE
from sdrun.config_store import register_configs
from sdrun.errors import ConfigError
from sdrun.report import write_report
from sdrun.sweeps import sweep
from sdrun.sweeps.space_check import check_cycles
from sdrun.sweeps.sweep import (
    SweepCallback,
    missing_search_plugin,
    objective,
    search_space,
    swept_keys,
)

PARAMS = {"distill.temperature": "tag(log, interval(0.5, 8.0))",
          "distill.kd_weight": "interval(0.0, 4.0)", "schedule.cycles": "choice(2, 4, 8)",
          "schedule.cycle_length": "null"}  # fmt: skip


def compose_search(*overrides: str):
    register_configs()
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["hparams_search=sd_optuna", *overrides],
            return_hydra_config=True,
        )


def test_the_preset_searches_temperature_kd_weight_and_cycles_with_seeded_tpe():
    cfg = compose_search()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.startswith("hydra_plugins.sdrun_optuna.")
    assert sweeper.direction == "maximize" and sweeper.pruner.name == "median"
    assert sweeper.sampler._target_.endswith("TPESampler") and sweeper.sampler.seed == 0
    assert sweeper.storage is None  # the journal file in the sweep folder
    assert OmegaConf.to_container(sweeper.params) == PARAMS
    assert "sdrun.sweeps.sweep.SweepCallback" in str(OmegaConf.to_container(cfg.hydra.callbacks))


def test_a_search_without_a_validation_split_is_refused_in_one_line(tmp_path: Path, capsys):
    cfg = compose_search(f"hydra.sweep.dir={tmp_path / 'search'}")
    with pytest.raises(SystemExit) as stop:  # Hydra calls this before the sweeper starts
        SweepCallback().on_multirun_start(config=cfg)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("sdrun: error: ") and "dataset.val_split" in line
    assert "test set" in line
    assert not (tmp_path / "search").exists()  # nothing started


def test_a_search_without_optuna_says_how_to_install_it(monkeypatch):
    assert missing_search_plugin(["hparams_search=sd_optuna"]) is None  # installed here
    real = sweep.importlib.util.find_spec
    monkeypatch.setattr(sweep.importlib.util, "find_spec",
                        lambda name: None if name == "optuna" else real(name))  # fmt: skip
    line = missing_search_plugin(["-m", "hparams_search=sd_optuna", "seed=1"])
    assert "pip install -e '.[optuna]'" in line and "\n" not in line
    assert missing_search_plugin(["-m", "seed=0,1"]) is None  # no search asked for


def test_the_command_line_narrows_fixes_or_extends_the_space():
    args = ["schedule.cycles=choice(1,2)", "distill.kd_weight=1", "optim.lr=interval(0.01,0.1)",
            "dataset.val_split=32"]  # fmt: skip
    space = search_space(args, PARAMS)
    assert space["schedule.cycles"] == "choice(1,2)" and space["distill.kd_weight"] == "1"
    assert space["optim.lr"] == "interval(0.01,0.1)" and "dataset.val_split" not in space
    assert swept_keys(args, PARAMS) == ["distill.temperature", "schedule.cycles", "optim.lr"]


def test_the_objective_is_validation_accuracy_when_there_is_a_split():
    assert objective({"student/top1": 70.0, "val/top1": 65.0}) == 65.0
    assert objective({"student/top1": 70.0}) == 70.0  # plain sweeps (a search needs a split)


def trials(search: Path) -> list[Path]:
    return search_trials(search)


def job_number(trial: Path) -> int:
    return yaml.safe_load((trial / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"]


def test_each_trial_is_a_run_folder_and_the_best_is_chosen_on_validation(search: Path):
    record = yaml.safe_load((search / "sweep.yaml").read_text())
    assert record["objective"] == "val/top1" and record["space"]["schedule.cycles"] == "choice(2)"
    folders = trials(search)
    assert len(folders) == 2
    done = [f for f in folders if complete(f)]
    (failed,) = set(folders) - set(done)
    assert json.loads((failed / "summary.json").read_text())["diverged"] is True
    assert "training diverged" in (failed / "sdrun.log").read_text()
    assert job_number(failed) == 0  # the first trial failed and the search went on
    (finished,) = done
    summary = json.loads((finished / "summary.json").read_text())
    config = yaml.safe_load((finished / ".hydra" / "config.yaml").read_text())
    assert config["optim"]["lr"] == 0.05 and config["schedule"]["cycles"] == 2
    results = yaml.safe_load((search / "optimization_results.yaml").read_text())
    assert results["best_value"] == summary["val/top1"]  # the objective: validation top-1
    assert results["best_params"]["optim.lr"] == 0.05


def test_the_trials_share_a_wandb_group_and_each_finishes_its_own_run(search: Path):
    runs = []
    for folder in trials(search):
        (path,) = (folder / "wandb").glob("offline-run-*/run-*.wandb")
        (run,) = by_type(path, "run")
        (exit_record,) = by_type(path, "exit")
        runs.append((run, exit_record.exit_code))
    assert {run.run_group for run, _ in runs} == {str(search)}
    assert len({run.run_id for run, _ in runs}) == 2  # no trial logs into another's run
    assert sorted(code for _, code in runs) == [0, 1]  # the diverged one is marked failed
    for run, _ in runs:
        assert run.display_name.startswith("resnet20 sd temperature=")
        assert "cycles=" in run.display_name and "lr=" in run.display_name
        assert run.display_name.endswith(" seed0")


def test_report_lists_every_trial_and_the_best_parameters(search: Path, tmp_path: Path):
    write_report([search], tmp_path / "report")
    text = (tmp_path / "report" / "RESULTS.md").read_text()
    section = text.split(f"## Search `{search}`", 1)[1]
    assert "**Best parameters** (Optuna, search finished)" in section
    assert "optim.lr=0.05" in section
    table = [
        line for line in section.splitlines() if line.startswith("| 0") or line.startswith("| 1")
    ]
    assert len(table) == 2 and sum("(best)" in line for line in table) == 1
    statuses = sorted(line.split(" | ")[-2] for line in table)
    assert statuses[0] == "complete" and statuses[1].startswith("failed: training diverged")
    assert (tmp_path / "report" / "searches.csv").read_text().count("\n") == 3  # header + 2


def test_a_fixed_list_in_the_space_is_not_a_searched_parameter(tmp_path: Path):
    """The report's parameters are the keys Hydra's parser called swept: a fixed list value
    (`[100,150]`) has a comma but is not searched."""
    from sdrun.report.search import Search

    params = {"distill.temperature": "interval(1,4)", "schedule.milestones": "[100,150]"}
    record = {"objective": "val/top1", "space": search_space([], params),
              "swept": swept_keys([], params)}  # fmt: skip
    assert record["space"] == params  # the sweeper's params may fix values too
    assert Search(tmp_path, record).params == ["distill.temperature"]


def test_a_deleted_key_leaves_the_search_space():
    params = {"distill.temperature": "interval(1,4)", "distill.kd_weight": "interval(0,2)"}
    assert search_space(["~distill.kd_weight"], params) == {"distill.temperature": "interval(1,4)"}


def test_a_space_with_cycles_that_do_not_divide_the_epochs_is_refused_before_any_trial(
    tmp_path: Path, capsys
):
    """The preset's cycles=choice(2,4,8) with a shortened budget of 12 epochs: 8 does not
    divide 12, which a trial drawing it would say hours into the search."""
    cfg = compose_search("dataset.val_split=32", "schedule.epochs=12",
                         f"hydra.sweep.dir={tmp_path / 'search'}")  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        SweepCallback().on_multirun_start(config=cfg)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("sdrun: error: ") and "schedule.cycles=choice(2, 4, 8)" in line
    assert "can draw 8" in line and "schedule.epochs=12" in line
    assert "schedule.cycles=choice(2,4)" in line  # the values that fit
    assert not (tmp_path / "search").exists()  # no sweep.yaml, no trial


@pytest.mark.parametrize(
    "space,epochs,bad",
    [("schedule.cycles=range(2,5)", 12, "can draw 5"),  # Optuna draws both ends
     ("schedule.cycles=range(2,4)", 12, None),
     ("schedule.cycles=range(2,8,2)", 24, None),
     ("schedule.cycles=interval(1,4)", 12, r"non-integer.*range\(1,4\)"),
     ("schedule.cycle_length=choice(3,5)", 15, None),
     ("schedule.cycle_length=choice(3,4)", 15, "can draw 4")],
)  # fmt: skip
def test_every_value_an_int_range_or_choice_can_draw_is_checked(space, epochs, bad):
    fixed = [] if space.startswith("schedule.cycles=") else ["schedule.cycles=null"]
    space_of = search_space([space, *fixed], PARAMS)
    if bad is None:
        check_cycles(space_of, epochs, search=True)
        return
    with pytest.raises(ConfigError, match=bad):
        check_cycles(space_of, epochs, search=True)


def test_a_plain_sweep_over_cycles_is_checked_too(tmp_path: Path, cifar100_root: Path):
    proc = sdrun_here("-m", "schedule.epochs=6", "schedule.cycle_length=null",
                      "schedule.cycles=2,3,4", f"dataset.root={cifar100_root}",
                      "dataset.download=false", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "the sweep's schedule.cycles=2,3,4 can draw 4" in line
    assert not (tmp_path / "sweep").exists()
