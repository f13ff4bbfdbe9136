"""Any run folder sdrun made pastes into `resume=` and `distill.teacher_checkpoint=`, with or
without quotes: sweep job folders carry no `=` or `,`, and folders named the old way
(`0_a=1,b=2`) still work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import CONF, read_jsonl, sdrun_here, tiny
from hydra.types import RunMode
from omegaconf import OmegaConf

from sdrun.commandline.job_names import job_dirname
from sdrun.commandline.overrides import quote_paths

TWO_EPOCHS = ("schedule.epochs=2", "schedule.cycle_length=1")


@pytest.fixture(scope="module")
def sweep(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-job multirun whose swept value holds a list: the hardest job name to paste."""
    work = tmp_path_factory.mktemp("sweep")
    args = tiny(cifar100_root, *TWO_EPOCHS, "distill.temperature=1,4",
                "schedule.milestones=[0.5,0.7]", f"hydra.sweep.dir={work / 'sweep'}")  # fmt: skip
    proc = sdrun_here("-m", *args, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "sweep"


def jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file())


def test_sweep_job_folders_say_what_was_swept_without_equals_or_commas(sweep: Path):
    names = [job.name for job in jobs(sweep)]
    assert len(names) == 2
    for num, name in enumerate(names):
        assert name.startswith(f"{num}_") and not set("=,[]'\" ") & set(name)
        # the swept key first, the fixed overrides after it
        assert name.startswith(f"{num}_distill.temperature-{(1, 4)[num]}__dataset.")


@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "quoted"])
def test_resume_takes_a_sweep_job_folder_as_pasted(sweep: Path, tmp_path: Path, quoted: bool):
    job = jobs(sweep)[1]
    value = f"'{job}'" if quoted else str(job)
    proc = sdrun_here(f"resume={value}", cwd=tmp_path)
    # The job's own overrides are re-applied (else resume refuses: model, schedule... differ).
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed after epoch 2" in proc.stdout + proc.stderr
    assert [r["epoch"] for r in read_jsonl(job / "metrics.jsonl")] == [1, 2]


@pytest.fixture(scope="module")
def old_style(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run in a folder named like sdrun 0.1's sweep jobs."""
    work = tmp_path_factory.mktemp("old")
    folder = work / "0_distill.temperature=1,seed=0"
    proc = sdrun_here(*tiny(cifar100_root, *TWO_EPOCHS, f"hydra.run.dir='{folder}'"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "quoted"])
def test_resume_takes_an_old_style_folder(old_style: Path, tmp_path: Path, quoted: bool):
    value = f"'{old_style}'" if quoted else str(old_style)
    proc = sdrun_here(f"resume={value}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed after epoch 2" in proc.stdout + proc.stderr


def test_teacher_checkpoint_takes_an_old_style_folder(
    old_style: Path, cifar100_root: Path, tmp_path: Path
):
    args = tiny(cifar100_root, "distill=kd", "schedule=cosine", "schedule.epochs=1",
                "schedule.cycle_length=null", f"distill.teacher_checkpoint={old_style}",
                f"hydra.run.dir={tmp_path / 'student'}")  # fmt: skip
    proc = sdrun_here(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_jsonl(tmp_path / "student" / "metrics.jsonl")[0]["teacher/top1"] is not None


def test_quote_paths_keeps_sweeps_over_existing_folders(tmp_path: Path):
    a, b = tmp_path / "0_x=1,y=2", tmp_path / "1_x=2"
    a.mkdir(), b.mkdir()
    given = ["distill.teacher_checkpoint=" + f"{a},{b}", "seed=0,1", f"resume={tmp_path}/new=1"]
    assert quote_paths(given) == [
        f"distill.teacher_checkpoint='{a}','{b}'",  # two folders: still a sweep over both
        "seed=0,1",  # not a path key
        f"resume='{tmp_path}/new=1'",  # does not exist yet: quoted whole, sdrun names it
    ]
    assert quote_paths([f"resume='{a}'", "resume=plain/dir"]) == [
        f"resume='{a}'",
        "resume=plain/dir",
    ]


def test_job_dirname_drops_brackets_and_quotes_and_replaces_separators():
    name = job_dirname(0, "model-timm/x y__schedule.milestones-[0.5,0.7]__tag-'a'")
    assert name == "0_model-timm-x-y__schedule.milestones-0.5-0.7__tag-a"


def test_job_dirname_is_short_enough_for_any_file_system():
    name = job_dirname(12, "__".join(f"key{i}-{'v' * 30}" for i in range(20)))
    assert name.startswith("12_key0-") and len(name.encode()) < 255
    assert job_dirname(3, "") == "3"


def test_a_long_job_folder_name_keeps_the_swept_values_before_the_fixed_overrides(
    tmp_path: Path,
):
    """Many fixed overrides sort before the swept key: the cut at 240 characters would drop
    the one value that tells the jobs apart. The swept keys (from sweep.yaml) come first."""
    fixed = [f"+model.kwargs.a{i}={'v' * 20}" for i in range(12)]
    (tmp_path / "sweep.yaml").write_text("swept: [seed, optim.lr]\n")
    subdir = yaml.safe_load((CONF / "config.yaml").read_text())["hydra"]["sweep"]["subdir"]
    OmegaConf.register_new_resolver("sdrun_job", job_dirname, replace=True)  # as main() does
    names = []
    for seed in (0, 1):
        cfg = OmegaConf.create({"hydra": {
            "mode": RunMode.MULTIRUN,
            "sweep": {"dir": str(tmp_path), "subdir": subdir},
            "overrides": {"task": [*fixed, f"seed={seed}", "optim.lr=0.1", "logger=none"]},
            "job": {"num": seed, "override_dirname": "unused",
                    "config": {"override_dirname": {"kv_sep": "-", "item_sep": "__",
                                                    "exclude_keys": ["logger"]}}},
        }})  # fmt: skip
        names.append(cfg.hydra.sweep.subdir)
    assert names[0].startswith("0_optim.lr-0.1__seed-0__+model.kwargs.a0-")
    assert names[1].startswith("1_optim.lr-0.1__seed-1__")
    assert all(len(name) <= 255 and "logger" not in name for name in names)


def test_job_folders_of_a_sweep_over_presets_name_the_preset(tmp_path: Path):
    """`experiment` is kept out of job folder names (a preset path says little once), but a
    sweep over presets has nothing else that tells its jobs apart: a swept key always names."""
    (tmp_path / "sweep.yaml").write_text("swept: [experiment]\n")
    config = yaml.safe_load((CONF / "config.yaml").read_text())["hydra"]
    OmegaConf.register_new_resolver("sdrun_job", job_dirname, replace=True)  # as main() does
    names = []
    for num, preset in enumerate(("cifar100/resnet20_sd", "cifar100/resnet20_cosine")):
        cfg = OmegaConf.create({"hydra": {
            "mode": RunMode.MULTIRUN,
            "sweep": {"dir": str(tmp_path), "subdir": config["sweep"]["subdir"]},
            "overrides": {"task": [f"+experiment={preset}", "seed=0", "logger=none"]},
            "job": {"num": num, "override_dirname": "seed-0", "config": config["job"]["config"]},
        }})  # fmt: skip
        names.append(cfg.hydra.sweep.subdir)
    assert names == ["0_+experiment-cifar100-resnet20_sd__seed-0",
                     "1_+experiment-cifar100-resnet20_cosine__seed-0"]  # fmt: skip
