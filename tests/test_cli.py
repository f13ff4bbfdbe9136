"""The `sdrun` command end to end, as a user runs it, on a CIFAR-100-format folder on disk (in this
process: `sdrun_here`; one bad input also through a real `python -m sdrun` process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import CONF, read_jsonl, sdrun, sdrun_here, tiny

from sdrun.methods import method_names

REQUIRED_KEYS = {
    "epoch", "cycle", "lr", "train/loss", "train/ce", "train/kd", "student/top1", "student/top5",
    "teacher/top1", "teacher/top5", "time/epoch_s", "throughput/img_per_s",
}  # fmt: skip


def test_run_dir_holds_config_metrics_summary_and_checkpoints(sd_run: Path):
    config = yaml.safe_load((sd_run / ".hydra" / "config.yaml").read_text())
    assert config["model"]["name"] == "resnet20"
    assert config["schedule"]["epochs"] == 4
    records = read_jsonl(sd_run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert [r["cycle"] for r in records] == [1, 1, 2, 2]
    for r in records:
        assert set(r) >= REQUIRED_KEYS
        assert 0.0 <= r["student/top1"] <= r["student/top5"] <= 100.0
        assert r["throughput/img_per_s"] > 0
    summary = json.loads((sd_run / "summary.json").read_text())
    assert summary["complete"] is True
    assert summary["student/top1"] == records[-1]["student/top1"]
    assert summary["student/best_top1"] == max(r["student/top1"] for r in records)
    assert summary["teacher/top1"] == records[-1]["teacher/top1"]
    assert summary["ensemble/members"] == 2 and 0.0 <= summary["ensemble/top1"] <= 100.0
    assert summary["time/wall_s"] >= summary["time/train_s"] > 0
    last = torch.load(sd_run / "checkpoints" / "last.pt", weights_only=False)
    assert {"model", "teacher", "optimizer", "scheduler", "scaler", "epoch", "rng"} <= set(last)
    assert last["epoch"] == 4
    assert (sd_run / "checkpoints" / "cycle1.pt").is_file()
    assert (sd_run / "checkpoints" / "cycle2.pt").is_file()


def test_no_teacher_in_cycle_one_then_kd_in_cycle_two(sd_run: Path):
    records = read_jsonl(sd_run / "metrics.jsonl")
    for r in records[:2]:
        assert r["teacher/top1"] is None and r["teacher/top5"] is None
        assert r["train/kd"] is None
        assert r["train/loss"] == pytest.approx(r["train/ce"])
    for r in records[2:]:
        assert r["teacher/top1"] is not None
        assert r["train/kd"] > 0
        assert r["train/loss"] == pytest.approx(r["train/ce"] + r["train/kd"], rel=1e-4)


def test_teacher_is_the_snapshot_of_the_end_of_cycle_one(sd_run: Path):
    records = read_jsonl(sd_run / "metrics.jsonl")
    end_of_cycle_1 = records[1]
    for r in records[2:]:
        assert r["teacher/top1"] == end_of_cycle_1["student/top1"]
        assert r["teacher/top5"] == end_of_cycle_1["student/top5"]
    snapshot = torch.load(sd_run / "checkpoints" / "cycle1.pt", weights_only=False)["model"]
    last = torch.load(sd_run / "checkpoints" / "last.pt", weights_only=False)
    # the teacher after the last epoch of cycle 2 is still, bit for bit, the cycle-1 snapshot
    for name, value in snapshot.items():
        assert torch.equal(last["teacher"][name], value), name
    # ... while the student moved away from it
    assert any(not torch.equal(last["model"][k], v) for k, v in snapshot.items())


def test_lr_restarts_at_the_cycle_start_and_ends_each_cycle_at_lr_min(sd_run: Path):
    records = read_jsonl(sd_run / "metrics.jsonl")
    assert records[1]["lr"] == pytest.approx(0.001)
    assert records[3]["lr"] == pytest.approx(0.001)
    assert records[0]["lr"] > records[1]["lr"]
    assert records[2]["lr"] > records[1]["lr"]


def test_distill_none_keeps_the_schedule_without_a_teacher(cifar100_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    args = tiny(cifar100_root, "distill=none", "schedule.epochs=2", "schedule.cycle_length=1",
                f"hydra.run.dir={run_dir}")  # fmt: skip
    proc = sdrun_here(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["cycle"] for r in records] == [1, 2]
    assert all(r["teacher/top1"] is None and r["train/kd"] is None for r in records)


def test_multirun_sweep_gives_each_job_its_own_run_dir(cifar100_root: Path, tmp_path: Path):
    sweep = tmp_path / "sweep"
    args = tiny(cifar100_root, "schedule.epochs=2", "schedule.cycle_length=1",
                "distill.temperature=1,4", f"hydra.sweep.dir={sweep}")  # fmt: skip
    proc = sdrun_here("-m", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())
    assert len(jobs) == 2
    temperatures = set()
    for job in jobs:
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        temperatures.add(cfg["distill"]["temperature"])
        assert len(read_jsonl(job / "metrics.jsonl")) == 2
    assert temperatures == {1.0, 4.0}


def test_resume_refuses_a_different_model(sd_run: Path, tmp_path: Path):
    hydra_dir = sd_run / ".hydra"
    before = {p.name: p.read_text() for p in hydra_dir.glob("*.yaml")}
    proc = sdrun_here(f"resume={sd_run}", "model=resnet32", cwd=tmp_path)
    assert proc.returncode == 2
    assert "model.name" in proc.stderr and "Traceback" not in proc.stderr
    # the refused session's composition does not replace the run's own (the next resume= reads it)
    assert {p.name: p.read_text() for p in hydra_dir.glob("*.yaml")} == before
    assert not list(hydra_dir.glob("before-resume-*"))


def test_a_new_run_never_overwrites_a_run_dir_with_checkpoints(cifar100_root, sd_run, tmp_path):
    before = (sd_run / "metrics.jsonl").read_text()
    proc = sdrun_here(*tiny(cifar100_root, f"hydra.run.dir={sd_run}"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "resume=" in proc.stderr
    assert (sd_run / "metrics.jsonl").read_text() == before


# Each value check of sdrun.config.validate is tested in test_config.py; here one of them and
# every check that needs the data, the model zoo, the device or a file, through the real CLI.
BAD_INPUTS = [
    (["model.name=resnet57"], "model.name"),
    (["schedule.cycle_length=3"], "schedule.cycle_length"),
    (["dataset.root=/nonexistent/sdrun-data"], "dataset.download"),
    (["trainer.device=cuda"], "trainer.device"),
    (["dataset.batch_size=100000"], "dataset.batch_size"),
    (["distill=kd", "distill.teacher_checkpoint=/nonexistent/run"], "distill.teacher_checkpoint"),
    # a key the method does not have, set or appended: the line names the keys it has
    (["+experiment=cifar100/resnet20_pskd", "distill.temperature=4"], "distill.alpha_T"),
    (["distill=pskd", "+distill.temperature=4"], "distill.alpha_T"),
]


@pytest.mark.parametrize("overrides,key", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_fails_before_training_with_one_line(cifar100_root, tmp_path, overrides, key):
    if key == "trainer.device" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    run_dir = tmp_path / "outputs" / "group" / "run"
    proc = sdrun_here(*tiny(cifar100_root, *overrides, f"hydra.run.dir={run_dir}"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sdrun: error: ") and key in lines[0]
    # nothing ran: no folder for sdrun-report to list, nor the empty ones made for it
    assert not (tmp_path / "outputs").exists()


def test_a_refused_run_keeps_a_folder_it_did_not_create(tmp_path: Path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    proc = sdrun_here("schedule.cycle_length=7", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2
    assert (run_dir / "notes.txt").read_text() == "mine"
    # a new run folder beside another run's: the group folder stays
    other = tmp_path / "group" / "other"
    other.mkdir(parents=True)
    proc = sdrun_here("schedule.cycle_length=7", f"hydra.run.dir={tmp_path / 'group' / 'new'}",
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert [p.name for p in (tmp_path / "group").iterdir()] == ["other"]


def test_misspelled_key_is_rejected_by_the_schema(tmp_path: Path):
    proc = sdrun_here("distill.temprature=2", cwd=tmp_path)
    assert proc.returncode != 0
    assert "temprature" in proc.stderr and "Traceback" not in proc.stderr


def test_a_real_process_exits_2_with_one_line_on_stderr(cifar100_root: Path, tmp_path: Path):
    """The process boundary itself: exit status and stderr as the shell sees them."""
    run_dir = tmp_path / "run"
    proc = sdrun(*tiny(cifar100_root, "distill.temperature=0", f"hydra.run.dir={run_dir}"),
                 cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sdrun: error: distill.temperature=0.0")
    assert not (run_dir / "metrics.jsonl").exists()


def _help_groups(text: str) -> dict[str, str]:
    section = text.split("== Groups ==")[1].split("== Config ==")[0]
    return dict(line.split(": ", 1) for line in section.strip().splitlines())


def _options(group: Path) -> list[str]:
    return sorted(p.stem for p in group.glob("*.yaml"))


@pytest.mark.parametrize("primary", ["config.yaml", "transfer.yaml"])
def test_help_lists_each_commands_own_groups_and_their_options(primary: str):
    """The group lists in --help are written by hand (Hydra's would mix the two commands'
    groups): every option in conf/ is listed for the command that takes it, and no other."""
    primary_cfg = yaml.safe_load((CONF / primary).read_text())
    groups = _help_groups(primary_cfg["hydra"]["help"]["template"])
    if primary == "transfer.yaml":
        expected = {"task": CONF / "task", "trainer": CONF / "trainer", "logger": CONF / "logger"}
    else:
        skip = {"task", "experiment", "hydra", "__pycache__"}
        expected = {p.name: p for p in CONF.iterdir() if p.is_dir() and p.name not in skip}
        expected["hydra/launcher"] = CONF / "hydra" / "launcher"
        presets = groups.pop("experiment")
        # the methods: the registered ones, filled in when --help prints (sdrun/config_store.py)
        assert groups.pop("distill").startswith("${sdrun_methods:} ")
        subs = [p.name for p in (CONF / "experiment").iterdir() if p.is_dir()]
        assert subs and all(f"{sub}/" in presets for sub in subs)
    assert set(groups) == set(expected)
    for name, folder in expected.items():
        listed = groups[name].split(" (")[0].split(", ")
        assert listed == _options(folder), name


def test_sdrun_help_shows_the_hand_written_groups(tmp_path: Path):
    result = sdrun_here("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "hparams_search: sd_optuna" in result.stdout and "\ntask:" not in result.stdout
    assert f"\ndistill: {', '.join(sorted(method_names()))} (" in result.stdout


def _fail_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, error: BaseException) -> None:
    """metrics.jsonl's line of `epoch` raises `error` (it is written just before the epoch's
    checkpoint: the epochs before it are saved)."""
    from sdrun.runfolder.loggers import MetricsFile

    append = MetricsFile.append

    def failing(self: MetricsFile, record: dict) -> None:
        if record["epoch"] == epoch:
            raise error
        append(self, record)

    monkeypatch.setattr(MetricsFile, "append", failing)


def test_a_resumed_session_that_saved_keeps_its_own_overrides_when_it_fails_later(
    cifar100_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """.hydra/ must say what last.pt was trained with: a resume that fails before saving puts
    the old files back, one that saved a checkpoint first keeps its own."""
    from sdrun.errors import DataError

    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_at_epoch(m, 2, DataError("disk gone"))
        assert sdrun_here(*tiny(cifar100_root, f"hydra.run.dir={run_dir}"), cwd=tmp_path).returncode
    overrides = run_dir / ".hydra" / "overrides.yaml"
    with monkeypatch.context() as m:  # fails before any checkpoint: the old files come back
        _fail_at_epoch(m, 2, DataError("disk gone"))
        assert sdrun_here(f"resume={run_dir}", "trainer.log_every=3", cwd=tmp_path).returncode
    assert "trainer.log_every=3" not in overrides.read_text()
    with monkeypatch.context() as m:  # epoch 2 saved, then a failure: its files stay
        _fail_at_epoch(m, 3, DataError("disk gone"))
        assert sdrun_here(f"resume={run_dir}", "trainer.log_every=5", cwd=tmp_path).returncode
    assert "trainer.log_every=5" in overrides.read_text()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2


def test_only_rank_0_backs_up_a_resumed_runs_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Under torchrun every process runs Hydra's callbacks on the one shared run dir."""
    from omegaconf import OmegaConf

    from sdrun.commandline.run_dir_guard import RunDirGuard

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path)}}, "resume": str(tmp_path)})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    RunDirGuard().on_run_start(config)
    assert not list((tmp_path / ".hydra").glob("before-resume-*"))
    monkeypatch.setenv("RANK", "0")
    RunDirGuard().on_run_start(config)
    assert len(list((tmp_path / ".hydra").glob("before-resume-*"))) == 1
