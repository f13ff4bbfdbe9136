"""`make reproduce` on a cluster and on a multi-GPU node, on the CPU: LAUNCHER=slurm through
submitit against a fake SLURM (tests/fake_slurm.py: sbatch, sacct, scancel, scontrol and srun
that run the jobs here), and LAUNCHER=local with the GPUs it hands out. The runs are real
smoke runs (tiny data, 2 epochs of 2 steps)."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import fake_slurm
import pytest
import yaml
from helpers import load_script, read_jsonl, sdrun_here
from test_reproduce import run_here

pytest.importorskip("submitit")

reproduce = load_script("reproduce")
SMALL = ["--", "dataset.limit_train=64"]  # 2 steps per epoch
HOLD = "holding after step"  # what sdrun's fault injection logs while it waits for a signal


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fake SLURM on PATH for this module's tests; its state folder."""
    root = tmp_path_factory.mktemp("slurm")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in fake_slurm.install(root / "bin", root / "state").items():
            mp.setenv(name, value)
        for name in [n for n in os.environ if n.startswith(("SLURM_", "SUBMITIT_"))]:
            mp.delenv(name)  # the test itself may run inside a SLURM job
        mp.setenv("OMP_NUM_THREADS", "1")  # jobs side by side on a small machine
        yield root / "state"
        fake_slurm.cleanup()


@pytest.fixture(scope="module")
def table(slurm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """cosine and sd in one array, born-again generation 2 after cosine; cosine gets SLURM's
    notice in its second epoch (after global step 3) and is requeued. Out folder, stdout."""
    out = tmp_path_factory.mktemp("table")
    cosine = out / "cifar100" / "resnet20" / "cosine" / "seed0"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SDRUN_FAULT_HOLD", f"{cosine}@3")
        mp.setenv("FAKE_SLURM_NOTICE", HOLD)
        proc = run_here("--smoke", "--models", "resnet20", "--methods", "cosine,sd,born-again",
                        "--launcher", "slurm", "--poll-s", "1", "--out", str(out), *SMALL,
                        cwd=out)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def run_dir(out: Path, method: str) -> Path:
    return out / "cifar100" / "resnet20" / method / "seed0"


def job_ids(stdout: str) -> dict[str, str]:
    """Each run's job, from `make reproduce`'s lines."""
    found = re.findall(
        r"resnet20 (\S+) seed 0: new -> .*\n    submitted as job (\S+?)[,\n]", stdout
    )
    return dict(found)


def test_slurm_submits_an_array_and_the_chain_after_its_teacher(table, slurm: Path):
    out, stdout = table
    ids = job_ids(stdout)
    array = ids["cosine"].split("_")[0]
    assert {ids["cosine"], ids["sd"]} == {f"{array}_0", f"{array}_1"}  # one job array
    assert f"submitted as job {ids['born-again-g2']}, after job {ids['cosine']}" in stdout
    script = next((out / "jobs").glob(f"{ids['born-again-g2']}/*_submission.sh")).read_text()
    assert f"--dependency=afterok:{ids['cosine']}" in script
    assert "--kill-on-invalid-dep=yes" in script
    assert json.loads((out / "jobs" / "slurm.json").read_text()) == {
        f"cifar100/resnet20/{m}/seed0": ids[m] for m in ("cosine", "sd", "born-again-g2")
    }
    states = json.loads((slurm / "jobs.json").read_text())
    assert all(states[ids[m]]["state"] == "COMPLETED" for m in ids)
    for method in ids:  # where each run went, as it went
        assert f"resnet20 {method} seed 0: done (job {ids[method]})" in stdout
    # generation 2 learned from generation 1's final model
    teacher = json.loads((run_dir(out, "cosine") / "summary.json").read_text())
    student = json.loads((run_dir(out, "born-again-g2") / "summary.json").read_text())
    assert student["teacher/top1"] == pytest.approx(teacher["student/top1"], abs=1.0)
    with open(out / "report" / "results.csv", newline="") as f:
        assert sorted(r["method"] for r in csv.DictReader(f)) == ["born-again-g2", "cosine", "sd"]


def test_a_job_stopped_by_the_notice_is_requeued_and_continues_its_run(table, slurm: Path):
    out, stdout = table
    cosine = job_ids(stdout)["cosine"]
    assert json.loads((slurm / "jobs.json").read_text())[cosine]["restarts"] == 1
    folder = run_dir(out, "cosine")
    log = next((out / "jobs").glob(f"{cosine}/*_log.err")).read_text()
    assert ("sdrun: stopped by SIGUSR2 in epoch 2 after step 1; checkpoint written; requeueing "
            "the job to continue from it") in log  # fmt: skip
    assert "already holds a run's checkpoint" not in log  # the requeued job was not refused
    sdrun_log = (folder / "sdrun.log").read_text()
    assert "resumed after epoch 1, step 3" in sdrun_log  # from the stop's checkpoint
    assert sdrun_log.count(HOLD) == 1  # the second session did not pass step 3 again
    assert [r["epoch"] for r in read_jsonl(folder / "metrics.jsonl")] == [1, 2]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["complete"] is True and summary["time/lost_wall_s"] == 0.0


def test_the_next_call_says_where_each_run_is_and_writes_the_report(table):
    out, _ = table
    (out / "report" / "RESULTS.md").unlink()
    proc = run_here("--smoke", "--models", "resnet20", "--methods", "cosine,sd,born-again",
                    "--launcher", "slurm", "--out", str(out), cwd=out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done, skipped") == 3 and "submitted" not in proc.stdout
    assert (out / "report" / "RESULTS.md").is_file()


def test_a_failed_job_is_named_with_its_log_and_its_chain_is_cancelled(slurm, tmp_path: Path):
    proc = run_here("--smoke", "--models", "resnet20", "--methods", "born-again", "--launcher",
                    "slurm", "--poll-s", "1", "--out", str(tmp_path), "--",
                    "optim.weight_decay=-1", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    ids = job_ids(proc.stdout)
    log = next((tmp_path / "jobs").glob(f"{ids['cosine']}/*_log.err"))
    assert (f"resnet20 cosine seed 0: failed (job {ids['cosine']} FAILED)\n"
            f"    sdrun: error: ") in proc.stderr  # fmt: skip
    assert f"    its log: {log}\n" in proc.stderr
    assert (f"resnet20 born-again-g2 seed 0: failed (job {ids['born-again-g2']} CANCELLED, "
            "never started)") in proc.stderr  # fmt: skip
    assert "Traceback" not in proc.stderr


def test_a_job_sbatch_refuses_is_one_line_and_nothing_is_left_half_recorded(
    slurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("FAKE_SLURM_PARTITIONS", "gpu,cpu")
    proc = run_here("--smoke", "--models", "resnet20", "--methods", "cosine", "--launcher",
                    "slurm", "--slurm", "partition=gpus", "--out", str(tmp_path),
                    cwd=tmp_path)  # fmt: skip
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("reproduce: error: sbatch refused the job: sbatch: error: Batch job "
                           "submission failed: Invalid partition name specified; fix the job "
                           "settings (SLURM=... or conf/hydra/launcher/slurm.yaml) and run make "
                           "reproduce again\n")  # fmt: skip
    assert json.loads((tmp_path / "jobs" / "slurm.json").read_text()) == {}


def test_local_gives_each_run_a_gpu_of_its_own(slurm, tmp_path: Path):
    """A 2-GPU node, simulated by what each job is given: GPUS=2,3, two runs at once."""
    proc = run_here("--smoke", "--models", "resnet20", "--methods", "cosine,sd", "--gpus", "2,3",
                    "--poll-s", "0.2", "--out", str(tmp_path), *SMALL, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = {}
    for log in (tmp_path / "jobs").glob("*/*_log.out"):
        folder, devices = re.search(r"sdrun job: (\S+); CUDA_VISIBLE_DEVICES=(\S+)",
                                    log.read_text()).groups()  # fmt: skip
        seen[Path(folder).parent.name] = devices
    assert sorted(seen) == ["cosine", "sd"] and sorted(seen.values()) == ["2", "3"]
    for method, gpu in seen.items():
        assert f"resnet20 {method} seed 0: new -> {run_dir(tmp_path, method)} (GPU {gpu})" in (
            proc.stdout
        )
        assert json.loads((run_dir(tmp_path, method) / "summary.json").read_text())["complete"]
    assert (tmp_path / "report" / "RESULTS.md").is_file()


def test_a_dry_run_prints_each_run_whole_in_plan_order(tmp_path: Path):
    proc = run_here("--models", "resnet20,resnet32", "--seeds", "2", "--jobs", "8", "--launcher",
                    "processes", "--dry-run", "--out", str(tmp_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    jobs = reproduce.plan(["resnet20", "resnet32"], list(reproduce.METHODS), [0, 1], 2, tmp_path)
    assert len(lines) == 2 * len(jobs)
    for i, job in enumerate(jobs):
        head, cmd = lines[2 * i], lines[2 * i + 1]
        assert head == f"[{i + 1:>2}/{len(jobs)}] {job.name}: new -> {job.run_dir}"
        assert cmd == "    " + " ".join(reproduce.command(job, "new", [])[1:])


@pytest.mark.parametrize(
    "args, line",
    [
        (("--launcher", "pbs"), "unknown launcher 'pbs'; pick from local, slurm, processes"),
        (("--launcher", "local", "--gpus", "0", "--jobs", "4"),
         "JOBS is for LAUNCHER=processes; LAUNCHER=local runs one run per GPU (GPUS=...) at once"),
        (("--launcher", "slurm", "--gpus", "0,1"),
         "GPUS is for LAUNCHER=local; LAUNCHER=slurm does not pick GPUs"),
        (("--gpus", "0,a"), "GPUS='0,a': give distinct GPU indices, e.g. GPUS=0,1,2,3"),
        (("--launcher", "processes", "--no-wait"),
         "WAIT=0 is for LAUNCHER=slurm: other launchers run the table here"),
        (("--launcher", "slurm", "--slurm", "partition=gpu timeout=5"),
         "SLURM: 'timeout=5' is not key=value with a key of conf/hydra/launcher/slurm.yaml"),
        (("--launcher", "slurm", "--slurm", "timeout_min=two"),
         "SLURM: timeout_min: Value 'two' of type 'str' could not be converted to Integer"),
    ],
    ids=["launcher", "jobs", "gpus", "gpu-index", "wait", "slurm-key", "slurm-value"],
)  # fmt: skip
def test_settings_that_do_not_go_together_are_one_line(tmp_path: Path, args, line: str):
    proc = run_here(*args, "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"reproduce: error: {line}") and proc.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_slurm_needs_sbatch_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    proc = run_here("--smoke", "--launcher", "slurm", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, "reproduce: error: LAUNCHER=slurm needs SLURM's "
                                              "sbatch, srun, sacct on PATH: run make reproduce "
                                              "on a login node of the cluster\n")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_no_gpu_means_processes_and_visible_gpus_mean_local(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    from sdrun.reproduce.cli import choose_launcher

    assert choose_launcher("", "", 2, True) == ("processes", [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # the usual way to hide every GPU
    assert choose_launcher("", "", 1, True) == ("processes", [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")  # e.g. what a SLURM allocation holds
    assert choose_launcher("", "", 1, True) == ("local", ["1", "3"])
    assert choose_launcher("", "0", 1, True) == ("local", ["0"])


def test_only_the_same_job_restarted_continues_a_run_folder(table):
    """The requeued job continued its run (above); any other start in that folder is refused
    as before."""
    out, stdout = table
    array, task = job_ids(stdout)["cosine"].split("_")
    folder = run_dir(out, "cosine")
    args = [*yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()),
            f"hydra.run.dir={folder}"]  # fmt: skip
    same = {"SLURM_JOB_ID": "7", "SLURM_ARRAY_JOB_ID": array, "SLURM_ARRAY_TASK_ID": task}
    other = {**same, "SLURM_ARRAY_TASK_ID": "9", "SLURM_RESTART_COUNT": "1"}
    for env in ({}, other, same):  # a plain sdrun; another job; the same job, not restarted
        proc = sdrun_here(*args, cwd=out, env=env)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr == (f"sdrun: error: {folder} already holds a run's checkpoint; pass "
                               f"resume={folder} to continue it, or choose another "
                               "hydra.run.dir\n")  # fmt: skip
