"""Issue 15's review of sdrun-report, item by item, on synthetic run folders (exact numbers,
no training): correct gains, one statistic, like compared with like, honest costs."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from report_builder import diverged, write_run

from sdrun.report import build_report, gain_record, main, methods_figure, row_record, stats
from sdrun.report.markdown import results_md


def report_of(*paths: Path, out: Path | None = None):
    report = build_report(list(paths), out or paths[0] / "report")
    return report, "\n".join(results_md(report))


def rows_by_label(report) -> dict[str, dict]:
    return {row.label: row_record(row) for row in report.rows}


def gains_by_baseline(report) -> dict[str, dict]:
    return {g.baseline.label: gain_record(g) for g in report.gains}


# 1. pairing only when both rows have the same seeds (issue 28.11: else Welch over every run),
# each side's n, the same runs as the row means
def test_gain_pairs_only_on_the_same_seeds_else_uses_every_run(tmp_path: Path):
    for seed in (0, 1, 2):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 70.0)
    for seed, top1 in zip((2, 3, 4), (71.5, 68.0, 68.0)):
        write_run(tmp_path / f"step{seed}", "step", seed, top1)
    report, text = report_of(tmp_path)
    gain = gains_by_baseline(report)["step"]
    # one shared seed: compared unpaired over all six runs, as the row means are
    assert gain["pairing"] == "unpaired" and (gain["n_sd"], gain["n_base"]) == (3, 3)
    assert gain["gain"] == pytest.approx(70.0 - statistics.fmean([71.5, 68.0, 68.0]))
    rows = rows_by_label(report)
    assert gain["sd_top1_mean"] == pytest.approx(100 - rows["sd"]["top1_err_mean"])
    assert gain["base_top1_mean"] == pytest.approx(100 - rows["step"]["top1_err_mean"])
    assert "| unpaired | 3 / 3 | 70.00 / 69.17 |" in text

    for seed in (3, 4):  # seeds 1 and 2 shared, SD has seed 0 too: still every run, unpaired
        shutil.rmtree(tmp_path / f"step{seed}")
    write_run(tmp_path / "step1", "step", 1, 69.0)
    gain = gains_by_baseline(report_of(tmp_path)[0])["step"]
    assert gain["pairing"] == "unpaired" and (gain["n_sd"], gain["n_base"]) == (3, 2)
    write_run(tmp_path / "step0", "step", 0, 69.5)  # now the same seeds: paired on all three
    report, text = report_of(tmp_path)
    gain = gains_by_baseline(report)["step"]
    assert gain["pairing"] == "paired n=3" and (gain["n_sd"], gain["n_base"]) == (3, 3)
    assert gain["gain"] == pytest.approx(statistics.fmean([70.0 - 69.5, 70.0 - 69.0, 70.0 - 71.5]))
    assert (gain["sd_seeds"], gain["base_seeds"]) == ("0 1 2", "0 1 2")
    assert gain["gain_df"] == 2


# 2. one quantity under one name: SE and a t-based 95 % interval, paired or not
def test_every_gain_has_its_standard_error_and_t_interval(tmp_path: Path):
    for seed, top1 in enumerate((71.0, 72.0, 73.0)):
        write_run(tmp_path / f"sd{seed}", "sd", seed, top1)
    for seed, top1 in enumerate((70.0, 70.0, 70.5)):
        write_run(tmp_path / f"step{seed}", "step", seed, top1)
    for seed, top1 in zip((5, 6), (70.0, 71.0)):
        write_run(tmp_path / f"cos{seed}", "cosine", seed, top1)
    report, text = report_of(tmp_path)
    gains = gains_by_baseline(report)
    paired, unpaired = gains["step"], gains["cosine"]
    diffs = [1.0, 2.0, 2.5]
    se = statistics.stdev(diffs) / math.sqrt(3)  # the SE, not the std of the differences
    assert paired["gain_se"] == pytest.approx(se)
    assert paired["gain_ci95_low"] == pytest.approx(statistics.fmean(diffs) - 4.3027 * se, abs=1e-3)
    assert paired["gain_ci95_high"] == pytest.approx(
        statistics.fmean(diffs) + 4.3027 * se, abs=1e-3
    )
    welch = math.sqrt(statistics.variance([71, 72, 73]) / 3 + statistics.variance([70, 71]) / 2)
    assert unpaired["gain_se"] == pytest.approx(welch)
    assert unpaired["gain_ci95_high"] - unpaired["gain"] == pytest.approx(
        stats.t_quantile(0.975, stats.welch_df(1.0, 3, 0.5, 2)) * welch
    )
    assert paired["ci95_includes_0"] == unpaired["ci95_includes_0"] == "true"
    assert "includes 0" in text and "standard error" in text and "95 % interval" in text
    assert "sd vs step (resnet56)" in text  # named where its interval includes 0


# 3. baselines compared on the settings their method reads; the others listed, with why
def test_baselines_are_compared_on_the_settings_each_method_reads(tmp_path: Path):
    old = {"schedule.milestones": [0.5, 0.75]}  # stored by every run, read by `step` only
    write_run(tmp_path / "sd", "sd", 0, 72.0, config=old)
    write_run(tmp_path / "step", "step", 0, 71.0,
              config={"schedule.milestones": [0.625, 0.75, 0.875]})  # fmt: skip
    write_run(tmp_path / "cosine", "cosine", 0, 71.5, config={"schedule.gamma": 0.5})
    write_run(tmp_path / "step_lr", "step", 0, 70.0, config={"optim.lr": 0.05, **old})
    write_run(tmp_path / "cyclic", "cyclic", 0, 70.5, config={"schedule.lr_min": 0.001})
    write_run(tmp_path / "cosine64", "cosine", 0, 71.0, config={"dataset.batch_size": 64})
    report, text = report_of(tmp_path)
    assert {g.baseline.method for g in report.gains} == {"step", "cosine"}
    assert {g.baseline.label for g in report.gains} == {
        "step (lr=0.1, milestones=[0.625,0.75,0.875])",
        "cosine (batch_size=128)",
    }
    assert "## Baselines not compared, and why" in text
    # brackets from a config value are escaped in Markdown (issue 26: no link can be made)
    assert "sd vs step (lr=0.05, milestones=\\[0.5,0.75\\]): optim.lr: 0.1 vs 0.05" in text
    assert "sd vs cyclic: schedule.lr_min: 0.0 vs 0.001" in text
    assert "sd vs cosine (batch_size=64): dataset.batch_size: 128 vs 64" in text


# 4. process count, SyncBN, AMP dtype and device kind are part of a row
def test_runtime_settings_split_rows_and_block_comparisons(tmp_path: Path):
    gpus = {"device": "NVIDIA H100", "device_type": "cuda", "processes": 4, "amp": "bf16"}
    for seed in (0, 1):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 72.0)
        write_run(tmp_path / f"step_cpu{seed}", "step", seed, 70.0)
        write_run(tmp_path / f"step_4gpu{seed}", "step", seed, 71.0, summary=gpus)
        write_run(tmp_path / f"step_sync{seed}", "step", seed, 71.2,
                  summary={**gpus, "sync_bn": True})  # fmt: skip
    # an older summary: no amp, sync_bn or device_type recorded, trainer.amp=auto on a GPU
    old = {"amp": None, "sync_bn": None, "device_type": None, "device": "Tesla V100-SXM2-16GB"}
    write_run(tmp_path / "step_old", "step", 0, 69.0, summary=old)
    report, text = report_of(tmp_path)
    rows = rows_by_label(report)
    steps = {k: v for k, v in rows.items() if k.startswith("step")}
    assert len(steps) == 4 and all(r["n"] in (1, 2) for r in steps.values())
    ran = {(r["device"], r["processes"], r["amp"], r["sync_bn"]) for r in steps.values()}
    assert ran == {("cpu", 1, "off", False), ("cuda", 4, "bf16", False),
                   ("cuda", 4, "bf16", True), ("cuda", 1, "unknown", False)}  # fmt: skip
    # only the step row that ran as SD did is compared with it
    assert [g.baseline.signature["runtime.device"] for g in report.gains] == ["cpu"]
    assert [g.baseline.signature["runtime.amp"] for g in report.gains] == ["off"]
    assert "runtime.processes: 1 vs 4" in text and "runtime.amp: off vs unknown" in text
    assert "runtime.device: cpu vs cuda" in text
    assert "cuda x4, amp bf16, sync_bn True" in text


# 5 and issue 11.5: a student's identity includes its teacher; chains pair on the root seed
def test_students_are_told_apart_by_their_teachers_recipe(tmp_path: Path, monkeypatch):
    runs, elsewhere = tmp_path / "outputs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    for seed in (0, 1, 2):
        write_run(runs / f"sd{seed}", "sd", seed, 72.0 + seed)
        write_run(runs / f"long{seed}", "cosine", seed, 71.0, config={"schedule.epochs": 240})
        write_run(runs / f"short{seed}", "cosine", seed, 60.0, config={"schedule.epochs": 30})
        # the lead's born-again seeds: own seed derived from the chain's root seed
        student = {"schedule.epochs": 240, "root_seed": seed}
        # relative to where sdrun was started (Hydra's runtime.cwd), as sdrun reads it
        write_run(runs / f"ba_long{seed}", "kd", 1000 + seed, 71.0 + seed,
                  config={**student, "distill.teacher_checkpoint": f"outputs/long{seed}"},
                  summary={"root_seed": seed}, launch_dir=tmp_path)  # fmt: skip
        # relative to the student's own run folder
        write_run(runs / f"ba_short{seed}", "kd", 1000 + seed, 65.0,
                  config={**student, "distill.teacher_checkpoint": f"../short{seed}"},
                  summary={"root_seed": seed})  # fmt: skip
    # a student of an earlier snapshot of the 240-epoch teacher is another experiment
    snapshot = runs / "long0" / "checkpoints" / "cycle1.pt"
    snapshot.parent.mkdir()
    snapshot.write_bytes(b"")  # never loaded: the report reads run folders, not weights
    cycle_student = {"schedule.epochs": 240, "distill.teacher_checkpoint": str(snapshot)}
    write_run(runs / "ba_cycle", "kd", 1000, 66.0, config=cycle_student, summary={"root_seed": 0})
    write_run(runs / "killed", "cosine", 7, None, write_summary=False)
    write_run(runs / "ba_killed", "kd", 7, 80.0,
              config={"distill.teacher_checkpoint": str(runs / "killed")})  # fmt: skip
    monkeypatch.chdir(elsewhere)  # the report's own directory must not matter
    report, text = report_of(runs)
    students = [row for row in report.rows if row.method == "born-again-g2"]
    cycle = [row for row in students if row.signature["teacher.checkpoint"] != "last.pt"]
    assert [row.n for row in cycle] == [1] and cycle[0].signature[
        "teacher.checkpoint"
    ] == "cycle1.pt"
    students = [row for row in students if row not in cycle]
    assert len(students) == 2 and all(row.n == 3 for row in students)
    by_teacher = {row.signature["teacher.schedule.epochs"]: row for row in students}
    assert set(by_teacher) == {240, 30}
    assert by_teacher[240].label == "born-again-g2 (teacher.checkpoint=last.pt, teacher.epochs=240)"
    # the student of a killed teacher is listed, not averaged
    killed = next(r for r in report.incomplete if r.path.name == "ba_killed")
    assert "teacher run" in killed.reason and "not complete" in killed.reason
    assert "ba_killed" in text
    gain = next(g for g in report.gains if g.baseline is by_teacher[240])
    assert gain.diff.pairing == "paired n=3"  # on the chain's root seed, not the own seed
    assert gain.diff.gain == pytest.approx(1.0)


# 6. a seed run twice counts once in sweep cells too
def test_sweep_cells_count_each_seed_once(tmp_path: Path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for t in (1.0, 4.0):
        for seed in (0, 1):
            write_run(sweep / f"T{t}_s{seed}", "sd", seed, 70.0 + seed,
                      config={"distill.temperature": t})  # fmt: skip
    write_run(sweep / "T1.0_s1_again", "sd", 1, 75.0, config={"distill.temperature": 1.0})
    report, text = report_of(sweep)
    cells = report.sweeps[0].cells()
    assert [len(c.runs) for c in cells.values()] == [2, 2]
    # the newest run of seed 1; top-1 error, as in the main table
    assert cells[(1.0,)].mean == pytest.approx(100 - statistics.fmean([70.0, 75.0]))
    assert "| 1.0 | 27.50 ± 2.50 | 2 | 0 |" in text
    assert "seed 1 ran twice" in text


# 7. secondary columns show their own n; the ensemble is compared on the same runs
def test_secondary_columns_say_how_many_runs_they_average(tmp_path: Path):
    write_run(tmp_path / "a", "sd", 0, 70.0, summary={"ensemble/top1": 72.0, "teacher/top1": 69.0})
    write_run(tmp_path / "b", "sd", 1, 60.0, summary={"ensemble/top1": 61.0, "teacher/top1": 59.0})
    write_run(tmp_path / "c", "sd", 2, 80.0, summary={"time/process_s": None})
    report, text = report_of(tmp_path)
    row = rows_by_label(report)["sd"]
    assert (row["n"], row["teacher_err_n"], row["ensemble_n"], row["process_h_n"]) == (3, 2, 2, 2)
    assert row["ensemble_gain"] == pytest.approx(1.5)  # (72-70 + 61-60) / 2, same runs
    assert row["ensemble_gain_se"] == pytest.approx(0.5)
    assert "36.00 (n=2)" in text and "33.50 (+1.50 top-1) (n=2)" in text


# 8. a diverged run is counted in its row, not hidden among killed runs
def test_diverged_runs_are_counted_per_row(tmp_path: Path, capsys):
    for seed in (0, 1, 2):
        write_run(tmp_path / f"step{seed}", "step", seed, 70.0 + seed)
    write_run(tmp_path / "step3", "step", 3, 10.0, summary=diverged(epoch=4, step=17))
    write_run(tmp_path / "killed", "step", 4, None, write_summary=False)
    report, text = report_of(tmp_path)
    row = rows_by_label(report)["step"]
    assert (row["n"], row["n_diverged"]) == (3, 1)
    assert row["top1_err_mean"] == pytest.approx(100 - 71.0)
    assert [r.path.name for r in report.incomplete] == ["killed"]
    assert "| 3 (+1 diverged) |" in text and "## Diverged runs" in text
    assert "diverged: the loss became NaN or infinite in epoch 4, step 17" in text
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "step3: diverged: the loss became NaN" in err and "not averaged: " in err


# 9. GPU-hours per session, lost work counted, the whole chain's cost
def test_process_hours_come_from_the_per_session_count(tmp_path: Path):
    # 1 h on 1 process, then resumed for 1 h on 4: 5 process-hours, not 2 h x 4 processes
    cost = {"time/wall_s": 7200.0, "time/process_s": 5 * 3600.0, "processes": 4,
            "time/lost_process_s": 1800.0, "device_type": "cuda", "device": "A100"}  # fmt: skip
    teacher = write_run(tmp_path / "teacher", "cosine", 0, 70.0, summary=cost)
    write_run(tmp_path / "student", "kd", 0, 71.0, summary=cost,
              config={"distill.teacher_checkpoint": str(teacher)})  # fmt: skip
    report, text = report_of(tmp_path)
    rows = rows_by_label(report)
    assert rows["cosine"]["process_h_mean"] == pytest.approx(5.0)
    assert rows["cosine"]["process_h_lost_mean"] == pytest.approx(0.5)
    assert rows["born-again-g2"]["process_h_with_teachers_mean"] == pytest.approx(2 * 5.5)
    assert rows["cosine"]["wall_h_mean"] == pytest.approx(2.0)
    assert "| 2 | 5 (0.5) | 5.5 |" in text and "| 2 | 5 (0.5) | 11 |" in text


# 10. published values only with the recipe they were measured with, cited precisely
def test_references_mark_recipe_differences_and_cite_their_sources(tmp_path: Path):
    crd = {"schedule.epochs": 240, "schedule.milestones": [0.625, 0.75, 0.875],
           "optim.lr": 0.05, "dataset.batch_size": 64}  # fmt: skip
    write_run(tmp_path / "crd", "step", 0, 72.0, config={"model.name": "resnet56", **crd})
    write_run(tmp_path / "smoke", "step", 0, 5.0,
              config={"model.name": "resnet56", "schedule.epochs": 2})  # fmt: skip
    write_run(tmp_path / "sd32", "sd", 0, 71.0, config={"model.name": "resnet32"})
    report, text = report_of(tmp_path)
    rows = {r.signature["schedule.epochs"]: r for r in report.rows if r.model == "resnet56"}
    ((ref, same),) = rows[240].references
    # the same recipe; CRD's number is its best test epoch (issue 28.7), said beside it
    assert ref.top1 == 72.34 and [d for d in same if not d.startswith("selection")] == []
    assert "Tian et al., Contrastive Representation Distillation, ICLR 2020" in ref.source
    ((_, smoke),) = rows[2].references
    assert "schedule.epochs: 2 vs 240" in smoke and "optim.lr: 0.1 vs 0.05" in smoke
    assert "27.66 (recipe differs; best test epoch)" in text
    assert "27.66 (same recipe; best test epoch)" in text
    assert "Yang et al., Snapshot Distillation" in text and "CVPR 2019" in text
    assert "as read in Gou et al., Knowledge Distillation: A Survey, IJCV 2021" in text
    assert "DESIGN.md" not in text


def test_published_values_on_other_networks_are_listed_beside_the_rows_of_their_method(
    tmp_path: Path,
):
    """The self-distillation sources publish only for networks sdrun does not train: one table
    per source, for the methods the report has rows of, with how the recipe differs."""
    for seed in (0, 1):
        write_run(tmp_path / f"cos{seed}", "cosine", seed, 75.0, config={"model.name": "resnet56"})
        write_run(tmp_path / f"pskd{seed}", "cosine", seed, 76.0,
                  config={"model.name": "resnet56", "distill.name": "pskd"})  # fmt: skip
    tfkd = {"distill.name": "tfkd", "distill.temperature": 20.0, "model.name": "resnet56"}
    write_run(tmp_path / "tfkd", "cosine", 0, 75.5, config=tfkd)
    smoke = {"model.name": "resnet20", "distill.name": "pskd", "schedule.epochs": 2}
    write_run(tmp_path / "smoke", "cosine", 0, 5.0, config=smoke)
    report, text = report_of(tmp_path)
    assert all(row.references == [] for row in report.rows)  # no row of their networks
    assert rows_by_label(report)["pskd"]["published_err"] == ""
    block = text.split("Published values on networks this table does not train", 1)[1]
    pskd = block.split("Kim et al., Self-Knowledge Distillation with Progressive Refinement", 1)[1]
    # PS-KD's table as its README prints it (errors), for cosine (its CE), tfkd and pskd only
    assert "| network | cosine: CE | tfkd: TF-KD | pskd: PS-KD |" in pskd
    assert "| PreAct ResNet-18 | 24.18 | 22.88 | 20.82 |" in pskd
    assert "| PyramidNet-200 | 16.80 | 16.48 | 15.49 |" in pskd
    assert "LS" not in pskd.split("How its recipe differs")[0]  # no ls rows here
    assert (
        "- resnet56 pskd vs every network: schedule.name: cosine vs step; schedule.epochs: 240 "
        "vs 300; optim.nesterov: False vs True; selection: final epoch vs best checkpoint on the "
        "test set (the official code's); compare the best-epoch column\n"
    ) in pskd
    assert (
        "- resnet20 pskd vs every network: schedule.name: cosine vs step; schedule.epochs: 2"
        in pskd
    )
    assert "- cosine vs every network: " in pskd and "(paper, unverified)" in pskd
    tf = block.split("Yuan et al., Revisiting Knowledge Distillation", 1)[1].split("Kim et al.")[0]
    assert "| ResNet-18 | 24.13 | 22.64 |" in tf and "| GoogLeNet | 21.85 | 20.78 |" in tf
    # each network's own Tf-KD settings and batch; the rotation no setting records
    assert "- tfkd vs ResNet-18: schedule.name: cosine vs step; schedule.epochs: 240 vs 200" in tf
    assert "distill.alpha: 0.1 vs 0.95; distill.temperature: 20 vs 40; distill.multiplier: " in tf
    assert "- cosine vs GoogLeNet: " in tf and "dataset.batch_size: 128 vs 64" in tf
    assert "random rotation up to 15 degrees" in tf
    _, cosine_only = report_of(tmp_path / "cos0", out=tmp_path / "cosine_report")
    write_run(tmp_path / "sd", "sd", 0, 75.0)
    _, sd_only = report_of(tmp_path / "sd", out=tmp_path / "sd_report")
    assert "networks this table does not train" not in sd_only
    assert "networks this table does not train" in cosine_only  # the sources' CE baselines


# 11. plots and the sweep table do not mislead
def test_methods_plot_shows_n_and_never_a_cut_bar(tmp_path: Path):
    for seed in (0, 1, 2):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 72.0 + 0.3 * seed)
    write_run(tmp_path / "step", "step", 0, 70.8)  # one seed
    report, _ = report_of(tmp_path)
    ax = methods_figure(report.rows).axes[0]
    bars = [p for p in ax.patches if type(p).__name__ == "Rectangle"]
    assert not bars or ax.get_ylim()[0] <= 0  # a bar's length must be its value
    if ax.get_ylim()[0] > 0:
        assert "not 0" in ax.get_ylabel()
    errorbars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(errorbars) == 1  # the 3-seed point only: no zero-length bar for n=1
    notes = [t.get_text() for t in ax.texts]
    assert any("n=1" in t for t in notes) and any("n=3" in t for t in notes)


def test_sweep_table_says_picking_its_best_cell_is_a_test_set_choice(tmp_path: Path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for t in (1.0, 4.0):
        write_run(sweep / f"T{t}", "sd", 0, 70.0 + t, config={"distill.temperature": t})
    _, text = report_of(sweep)
    assert "a choice made on the test set" in text and "`dataset.val_split`" in text
    for t, val in ((1.0, 60.0), (4.0, 58.0)):
        path = sweep / f"T{t}" / "summary.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "val/top1": val}))
    _, text = report_of(sweep)
    header = "| distill.temperature | final top-1 err (%) | n | diverged | val top-1 err (%) |"
    assert header in text
    assert "| 1.0 | 29.00 | 1 | 0 | 40.00 (best on val) |" in text  # errors, as the main table
