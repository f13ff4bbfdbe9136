"""sdrun-report on run and sweep directories written by real short runs, and on broken ones."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from helpers import sdrun_here

from sdrun.report import main

SEEDS = (0, 1)


def tiny(root: Path) -> list[str]:
    """ResNet-20, 4 epochs of 2 steps on 64 images: a second or two per run after start-up."""
    return [
        f"dataset.root={root}", "dataset.download=false", "dataset.batch_size=32",
        "dataset.eval_batch_size=64", "dataset.limit_train=64", "dataset.limit_test=64",
        "model=resnet20", "schedule.epochs=4", "schedule.lr_min=0.001", "optim.lr=0.05",
        "logger=none",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temperature x cycle-length sweep preset on a 2 x 2 grid, two seeds per cell: eight
    real runs of one multirun in this process, 4 settings of SD with 2 seeds each."""
    work = tmp_path_factory.mktemp("report")
    proc = sdrun_here(
        "-m", "+experiment=sweep/temperature_x_cycle", *tiny(cifar100_root),
        "distill.temperature=1,4", "schedule.cycle_length=1,2", "dataset.limit_train=64",
        "dataset.limit_test=64",
        f"seed={','.join(map(str, SEEDS))}", f"hydra.sweep.dir={work / 'sweep'}", cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "sweep"


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def jobs(sweep: Path) -> dict[tuple[float, int], list[Path]]:
    """Run dirs by (temperature, cycle length), from the preset's subdir names
    <num>_T<temperature>_cycle<length>_seed<seed>."""
    out: dict[tuple[float, int], list[Path]] = {}
    for path in sorted(p for p in sweep.iterdir() if (p / "summary.json").exists()):
        _, t, cycle, _ = path.name.split("_")
        out.setdefault((float(t[1:]), int(cycle[5:])), []).append(path)
    return out


@pytest.fixture(scope="module")
def report(sweep: Path) -> Path:
    assert main([str(sweep), "--run-plots"]) == 0
    return sweep / "report"


def test_one_row_per_setting_with_mean_and_std_over_seeds(sweep: Path, report: Path):
    rows = {r["variant"]: r for r in read_csv(report / "results.csv")}
    grid = jobs(sweep)
    assert len(grid) == 4 and all(len(runs) == len(SEEDS) for runs in grid.values())
    for (temperature, cycle), runs in grid.items():
        # the four rows are one method in four settings, told apart by what differs
        row = rows[f"temperature={temperature}, cycle_length={cycle}"]
        assert (row["dataset"], row["model"], row["method"]) == ("cifar100", "resnet20", "sd")
        assert row["n"] == str(len(SEEDS)) and row["seed_list"] == "0 1"
        assert (row["device"], row["processes"], row["amp"], row["n_diverged"]) == (
            "cpu", "1", "off", "0")  # fmt: skip
        errors = [100.0 - summary(r)["student/top1"] for r in runs]
        best = [100.0 - summary(r)["student/best_top1"] for r in runs]
        assert float(row["top1_err_mean"]) == pytest.approx(statistics.fmean(errors), abs=1e-3)
        assert float(row["top1_err_std"]) == pytest.approx(statistics.stdev(errors), abs=1e-3)
        se = statistics.stdev(errors) / math.sqrt(len(SEEDS))
        assert float(row["top1_err_se"]) == pytest.approx(se, abs=1e-3)
        assert float(row["best_epoch_err_mean_test_selected"]) == pytest.approx(
            statistics.fmean(best), abs=1e-3
        )
        assert float(row["wall_h_mean"]) > 0
        # one process: process-hours are the wall hours
        assert float(row["process_h_mean"]) == pytest.approx(float(row["wall_h_mean"]), abs=2e-4)
        # 4 or 2 cycles: the last cycle's teacher is the one reported
        teacher = [100.0 - summary(r)["teacher/top1"] for r in runs]
        assert float(row["teacher_err_mean"]) == pytest.approx(statistics.fmean(teacher), abs=1e-3)


def test_sweep_heatmap_and_its_table(sweep: Path, report: Path):
    assert (report / "sweeps" / "sweep.png").stat().st_size > 1000
    text = (report / "RESULTS.md").read_text()
    assert "![heatmap](sweeps/sweep.png)" in text
    header = "| distill.temperature | schedule.cycle_length | final top-1 err (%) | n | diverged |"
    assert header in text
    for (temperature, cycle), runs in jobs(sweep).items():
        err = [100.0 - summary(r)["student/top1"] for r in runs]  # as the main table
        se = statistics.stdev(err) / math.sqrt(len(err))
        cell = f"{statistics.fmean(err):.2f} ± {se:.2f}"
        assert f"| {temperature} | {cycle} | {cell} | {len(SEEDS)} | 0 |" in text


def test_markdown_and_plots(report: Path):
    text = (report / "RESULTS.md").read_text()
    assert "## cifar100" in text and "selected on the test set" in text.replace("**", "")
    recipe = "4 cosine cycles x 1 ep, SMOKE"  # 4 epochs on 64 images: a smoke run
    assert (
        f"| resnet20 | sd (temperature=1.0, cycle_length=1) | {recipe} | cpu x1, amp off | 2 |"
        in text
    )
    assert (report / "methods_cifar100.png").stat().st_size > 1000
    plots = sorted((report / "runs").glob("*.png"))
    assert len(plots) == 4 * len(SEEDS)
    for png in plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.relative_to(report)})" in text  # linked from RESULTS.md


@pytest.fixture
def broken(sweep: Path, tmp_path: Path) -> Path:
    """Copies of a finished run, damaged the ways runs end up damaged."""
    good = jobs(sweep)[(1.0, 1)][0]
    root = tmp_path / "broken"

    def copy(name: str) -> Path:
        return Path(shutil.copytree(good, root / name, ignore=shutil.ignore_patterns("*.pt")))

    killed = copy("killed")  # killed during epoch 2 of 4: no summary, last line cut short
    (killed / "summary.json").unlink()
    first = (killed / "metrics.jsonl").read_text().splitlines()[0]
    (killed / "metrics.jsonl").write_text(first + '\n{"epoch": 2, "cyc')
    unfinished = copy("unfinished")
    data = summary(unfinished)
    (unfinished / "summary.json").write_text(json.dumps({**data, "complete": False}))
    garbled = copy("garbled")
    (garbled / "summary.json").write_text('{"complete": tr')
    empty = root / "empty" / ".hydra"  # started, nothing written yet
    empty.mkdir(parents=True)
    shutil.copy(good / ".hydra" / "config.yaml", empty / "config.yaml")
    orphan = root / "orphan"
    orphan.mkdir()
    shutil.copy(good / "metrics.jsonl", orphan / "metrics.jsonl")
    return root


def test_broken_runs_are_listed_never_averaged(sweep: Path, broken: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main([str(sweep), str(broken), "--out", str(out), "--run-plots"]) == 0
    err = capsys.readouterr().err
    rows = read_csv(out / "results.csv")
    assert [r["n"] for r in rows] == ["2"] * 4  # no damaged copy is in a mean
    expected = {
        "killed": "incomplete: 1 of 4 epochs done, no summary.json (killed, failed or still",
        "unfinished": "incomplete: summary.json says complete=False",
        "garbled": "unreadable summary.json",
        "empty": "incomplete: no epoch finished",
        "orphan": "no .hydra/config.yaml: not a run directory",
    }
    text = (out / "RESULTS.md").read_text()
    assert "## Incomplete or unreadable runs (not averaged)" in text
    for name, message in expected.items():
        line = next(line for line in err.splitlines() if f"broken/{name}" in line)
        assert message in line, line
        assert message in text
    assert "4 incomplete" in text
    # the killed run still gets its curves, marked incomplete
    assert any("killed" in p.name for p in (out / "runs").glob("*.png"))


def test_no_runs_is_a_clear_error(tmp_path: Path, capsys):
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no run directories under" in err and ".hydra/config.yaml" in err
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
