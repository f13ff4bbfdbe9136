"""`make reproduce SMOKE=1` end to end (scripts/reproduce.py), the born-again chain in it, and
picking up where an interrupted reproduce stopped; the self-distillation table's plan
(`make reproduce TABLE=selfkd`)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
import yaml
from helpers import Result, load_script

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "reproduce.py"
METHODS = ["sd", "cyclic", "cosine", "step", "born-again-g2"]
SELFKD = ["sd", "cyclic", "cosine", "ls", "tfkd", "cskd", "pskd", "dlb", "byot"]


reproduce = load_script("reproduce")


def run_here(*args: str, cwd: Path) -> Result:
    """The script's main() in this process (each run it starts is still its own process)."""
    out, err = io.StringIO(), io.StringIO()
    saved = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = reproduce.main(list(args))
    finally:
        os.chdir(saved)
    return Result(code, out.getvalue(), err.getvalue())


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke reproduce of ResNet-20: 4 methods and a 2-generation chain, 1 seed."""
    out = tmp_path_factory.mktemp("smoke")
    proc = run_here("--smoke", "--models", "resnet20", "--launcher", "processes", "--jobs", "2",
                    "--out", str(out), cwd=out)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


def run_dir(out: Path, method: str, seed: int = 0) -> Path:
    return out / "cifar100" / "resnet20" / method / f"seed{seed}"


def summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def test_smoke_runs_every_method_with_its_preset_and_writes_the_report(smoke: Path):
    for method in METHODS:
        folder = run_dir(smoke, method)
        assert summary(folder)["complete"] is True, method
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        preset = "kd" if method.startswith("born-again") else method
        assert f"+experiment=cifar100/resnet20_{preset}" in overrides
    assert (smoke / "data" / "cifar-100-python" / "train").is_file()  # its own tiny data
    with open(smoke / "report" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == METHODS
    assert all(r["n"] == "1" and r["model"] == "resnet20" for r in rows)
    text = (smoke / "report" / "RESULTS.md").read_text()
    assert "## SD gain over each baseline" in text
    with open(smoke / "report" / "gains.csv", newline="") as f:
        gains = {g["baseline"]: g for g in csv.DictReader(f)}
    assert set(gains) == set(METHODS) - {"sd"}  # same recipe: every baseline is compared
    sd = summary(run_dir(smoke, "sd"))["student/top1"]
    for method, gain in gains.items():  # one seed: unpaired, one run a side, no SE
        diff = sd - summary(run_dir(smoke, method))["student/top1"]
        assert float(gain["gain"]) == pytest.approx(diff, abs=1e-3)
        assert (gain["pairing"], gain["n_sd"], gain["n_base"], gain["gain_se"]) == (
            "unpaired", "1", "1", "")  # fmt: skip
    assert len(list((smoke / "report" / "runs").glob("*.png"))) == len(METHODS)


def test_born_again_generation_two_is_taught_by_generation_one(smoke: Path):
    teacher, student = run_dir(smoke, "cosine"), run_dir(smoke, "born-again-g2")
    cfg = yaml.safe_load((student / ".hydra" / "config.yaml").read_text())
    assert cfg["distill"]["name"] == "kd"
    assert Path(cfg["distill"]["teacher_checkpoint"]) == teacher
    # the teacher it measured is generation 1's final model (BN folded: allow one image)
    assert summary(student)["teacher/top1"] == pytest.approx(
        summary(teacher)["student/top1"], abs=1.0
    )
    # its own seed (a different initialisation and batch order), recorded with the chain's
    assert cfg["seed"] == reproduce.generation_seed(0, 2) != summary(teacher)["seed"] == 0
    assert (summary(student)["seed"], summary(student)["root_seed"]) == (cfg["seed"], 0)
    assert summary(teacher)["root_seed"] == 0
    with open(smoke / "report" / "results.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    own, chain = (
        float(rows["born-again-g2"][k]) for k in ("process_h_mean", "process_h_with_teachers_mean")
    )
    # the chain's process-hours: the student's and its teacher's (no work lost to stops here);
    # three values each rounded to 4 decimals in the CSV: up to 1.5e-4 apart
    assert chain == pytest.approx(own + float(rows["cosine"]["process_h_mean"]), abs=2e-4)


def test_a_second_reproduce_skips_finished_runs_and_resumes_a_killed_one(smoke: Path):
    killed = run_dir(smoke, "born-again-g2")
    (killed / "summary.json").unlink()  # as if killed after its last checkpoint
    finished = {m: (run_dir(smoke, m) / "summary.json").stat().st_mtime_ns for m in METHODS[:4]}
    proc = run_here("--smoke", "--models", "resnet20", "--out", str(smoke), cwd=smoke)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("done, skipped") == 4
    assert f"resume -> {killed}" in proc.stdout
    assert summary(killed)["complete"] is True
    for method, mtime in finished.items():
        assert (run_dir(smoke, method) / "summary.json").stat().st_mtime_ns == mtime


def test_default_plan_is_the_whole_table_seed_by_seed(tmp_path: Path):
    jobs = reproduce.plan(
        list(reproduce.MODELS), list(reproduce.METHODS), [0, 1, 2], generations=3, out=tmp_path
    )
    # per network and seed: sd, cyclic, cosine, step, and the chain's generations 2 and 3
    assert len(jobs) == 5 * 3 * 6
    assert len({j.run_dir for j in jobs}) == len(jobs)
    assert [j.seed for j in jobs] == sorted(j.seed for j in jobs)
    g3 = next(j for j in jobs if j.method == "born-again-g3")
    g2 = next(j for j in jobs if j.method == "born-again-g2" and j.model == g3.model)
    assert g3.overrides == (
        f"distill.teacher_checkpoint={g2.run_dir}",
        f"seed={reproduce.generation_seed(g3.seed, 3)}",
        f"root_seed={g3.seed}",
    )
    seeds = {reproduce.generation_seed(j.seed, k) for j in jobs for k in (1, 2, 3)}
    assert len(seeds) == 3 * 3  # every (root, generation) of the table has its own seed
    assert g3.preset == f"cifar100/{g3.model}_kd"
    cosine = next(j for j in jobs if (j.method, j.model, j.seed) == ("cosine", g3.model, g3.seed))
    # each generation starts after the one before it: its teacher, which the plan puts first
    assert (g3.teacher, g2.teacher) == (g2.run_dir, cosine.run_dir)
    assert jobs.index(cosine) < jobs.index(g2) < jobs.index(g3)
    assert sum(j.teacher is not None for j in jobs) == 5 * 3 * 2
    for job in jobs:  # every job names an existing preset
        assert (SCRIPT.parent.parent / "conf" / "experiment" / f"{job.preset}.yaml").is_file()


def test_selection_variables():
    assert reproduce.parse_seeds("3") == [0, 1, 2]
    assert reproduce.parse_seeds("1") == [0]
    assert reproduce.parse_seeds("0,2") == [0, 2] == reproduce.parse_seeds("0 2")
    assert reproduce.parse_seeds("4,") == [4]
    assert reproduce.parse_names("", reproduce.MODELS, "model") == list(reproduce.MODELS)
    assert reproduce.parse_names("resnet56,resnet20", reproduce.MODELS, "model") == [
        "resnet56",
        "resnet20",
    ]
    for bad in ("", "two", "-1"):
        with pytest.raises(ValueError, match="a count"):
            reproduce.parse_seeds(bad)
    with pytest.raises(ValueError, match="unknown model resnet57"):
        reproduce.parse_names("resnet57", reproduce.MODELS, "model")


def test_a_bad_selection_is_refused_before_anything_runs(tmp_path: Path):
    proc = run_script("--models", "resnet57", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown model resnet57" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def planned(stdout: str) -> list[str]:
    """`<model> <method> seed <s>` of each run a --dry-run lists, in order."""
    return [line.split("] ", 1)[1].split(":")[0] for line in stdout.splitlines() if "] " in line]


def test_selfkd_table_is_nine_methods_on_five_networks_each_with_its_preset(tmp_path: Path):
    models = list(reproduce.MODELS)
    jobs = reproduce.plan(models, list(reproduce.TABLES["selfkd"]), [0, 1, 2], 2, tmp_path)
    assert [(j.seed, j.model, j.method) for j in jobs] == list(
        product([0, 1, 2], models, SELFKD)
    )  # seed by seed, the table's order
    for job in jobs:
        assert job.run_dir == tmp_path / "cifar100" / job.model / job.method / f"seed{job.seed}"
        assert job.preset == f"cifar100/{job.model}_{job.method}" and job.overrides == ()
        assert job.cyclic == (job.method in {"sd", "cyclic"})
        assert (SCRIPT.parent.parent / "conf" / "experiment" / f"{job.preset}.yaml").is_file()
    assert all(j.teacher is None for j in jobs)  # no chain: every run may start at once


def test_the_tables_share_the_folders_of_sd_cyclic_and_cosine(tmp_path: Path):
    models, seeds = list(reproduce.MODELS), [0, 1, 2]
    paper, selfkd = (
        {
            j.run_dir: j
            for j in reproduce.plan(models, list(reproduce.TABLES[t]), seeds, 2, tmp_path)
        }
        for t in ("paper", "selfkd")
    )
    shared = set(paper) & set(selfkd)
    assert {(j.model, j.method, j.seed) for d, j in selfkd.items() if d in shared} == set(
        product(models, ["sd", "cyclic", "cosine"], seeds)
    )
    assert all(paper[d] == selfkd[d] for d in shared)  # the same run: preset, seed, folder
    # a run the default table finished is skipped by the self-distillation table
    done = tmp_path / "cifar100" / "resnet20" / "cosine" / "seed0"
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"complete": True}))
    proc = run_here("--table", "selfkd", "--models", "resnet20", "--seeds", "1", "--dry-run",
                    "--out", str(tmp_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "resnet20 cosine seed 0: done, skipped" in proc.stdout
    assert proc.stdout.count("done, skipped") == 1 and proc.stdout.count(": new -> ") == 8


def test_the_default_table_is_unchanged(tmp_path: Path):
    assert reproduce.TABLES["paper"] == reproduce.METHODS == (
        "sd", "cyclic", "cosine", "step", "born-again")  # fmt: skip
    runs = [
        run_here(*table, "--models", "resnet20", "--seeds", "1", "--dry-run", "--out",
                 str(tmp_path), cwd=tmp_path)
        for table in ((), ("--table", ""), ("--table", "paper"))
    ]  # fmt: skip
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    assert planned(runs[0].stdout) == [f"resnet20 {m} seed 0" for m in METHODS]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, line",
    [
        (("--table", "selfkd2"), "reproduce: error: unknown table 'selfkd2'; pick from paper, "
         "selfkd"),
        (("--table", "selfkd", "--methods", "cosine,step"), "reproduce: error: unknown method "
         "step in table selfkd; pick from sd, cyclic, cosine, ls, tfkd, cskd, pskd, dlb, byot"),
        (("--methods", "pskd"), "reproduce: error: unknown method pskd in table paper; pick "
         "from sd, cyclic, cosine, step, born-again"),
    ],
    ids=["table", "method-of-another-table", "default-table"],
)  # fmt: skip
def test_a_bad_table_or_method_is_one_line(tmp_path: Path, args: tuple[str, ...], line: str):
    proc = run_here(*args, "--out", str(tmp_path), cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", line + "\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_reproduce_passes_table_and_the_selections_to_the_script(tmp_path: Path):
    def make_n(*variables: str) -> list[str]:
        """The script's arguments `make reproduce` would pass, with --dry-run added."""
        env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS"}}
        proc = subprocess.run(  # not the variables of a `make test` this runs under
            ["make", "-n", "-s", "reproduce", *variables, f"OUT={tmp_path}"],
            cwd=SCRIPT.parent.parent, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        line = next(
            x for x in proc.stdout.replace("\\\n", " ").splitlines() if str(SCRIPT.name) in x
        )
        args = shlex.split(line.split("scripts/reproduce.py", 1)[1])
        return ["--dry-run", *args]

    args = make_n("TABLE=selfkd", "MODELS=resnet20", "METHODS=cosine dlb", "SEEDS=0,2", "SMOKE=1")
    assert "--smoke" in args
    proc = run_here(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert planned(proc.stdout) == [
        f"resnet20 {m} seed {s}" for s in (0, 2) for m in ("cosine", "dlb")
    ]
    proc = run_here(*make_n("MODELS=resnet20", "SEEDS=1"), cwd=tmp_path)  # no TABLE: the paper's
    assert planned(proc.stdout) == [f"resnet20 {m} seed 0" for m in METHODS]
    proc = run_here(*make_n("TABLE=selfkd", "METHODS=step"), cwd=tmp_path)
    assert proc.returncode == 2 and "unknown method step in table selfkd" in proc.stderr
    # where the runs go: LAUNCHER, GPUS, SLURM (quoted values inside), WAIT
    args = make_n("LAUNCHER=slurm", 'SLURM=partition=gpu "setup=[module load cuda]"', "WAIT=0")
    at = args.index("--slurm")
    assert args[at + 1] == 'partition=gpu "setup=[module load cuda]"' and "--no-wait" in args
    assert args[args.index("--launcher") + 1] == "slurm"
    assert run_here(*args, "--models", "resnet20", "--seeds", "1", cwd=tmp_path).returncode == 0
    args = make_n("GPUS=0,1")
    assert args[args.index("--gpus") + 1] == "0,1" and "--no-wait" not in args
