"""Issue 19's review of sdrun-report (items 4-11 and the report's part of 21), on synthetic
run folders (exact numbers, no training): no table is silently wrong."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest
import yaml
from helpers import load_script
from report_builder import write_run

from sdrun.report import build_report, gain_record, main, plots, row_record
from sdrun.report.markdown import results_md


def report_of(*paths: Path, **kwargs):
    report = build_report(list(paths), paths[0] / "report", **kwargs)
    return report, "\n".join(results_md(report))


def make_search(root: Path, trials: list[tuple[float, float, float]]) -> Path:
    """A search folder as SweepCallback and Hydra leave it: sweep.yaml with its objective,
    multirun.yaml, one SD trial per (lr, test top-1, val top-1), all with seed 0."""
    root.mkdir(parents=True)
    record = {"objective": "val/top1", "direction": "maximize", "swept": ["optim.lr"],
              "space": {"optim.lr": "choice(0.05, 0.2)"}, "n_trials": len(trials)}  # fmt: skip
    (root / "sweep.yaml").write_text(yaml.safe_dump(record))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    for i, (lr, top1, val) in enumerate(trials):
        write_run(root / str(i), "sd", 0, top1, config={"optim.lr": lr},
                  summary={"val/top1": val})  # fmt: skip
    return root


# 4. search trials are in the search section only
def test_search_trials_are_in_no_row_and_no_gain(tmp_path: Path):
    for seed in (0, 1):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 70.0 + seed)
        write_run(tmp_path / f"step{seed}", "step", seed, 69.0 + seed)
    # a trial with the rows' own settings and seed 0 (it would replace sd0 as the newest run
    # of seed 0), and one selected on validation with a lucky test number
    make_search(tmp_path / "search", [(0.1, 60.0, 50.0), (0.2, 80.0, 55.0)])
    report, text = report_of(tmp_path)
    rows = {row.label: row for row in report.rows}
    assert list(rows) == ["sd", "step"]
    assert [r.path.name for r in rows["sd"].runs] == ["sd0", "sd1"]
    assert [(g.sd.label, g.diff.n_a) for g in report.gains] == [("sd", 2)]
    assert gain_record(report.gains[0])["gain"] == pytest.approx(1.0)
    assert not report.sweeps and "## Sweep" not in text  # the search is not a sweep table
    assert "seed 0 ran twice" not in text
    assert main([str(tmp_path)]) == 0
    written = (tmp_path / "report" / "RESULTS.md").read_text()
    assert "## Search" in written and written.count("| complete |") == 2


# 5. a setting one side has and the other lacks makes rows not comparable
def test_a_setting_on_one_side_only_blocks_the_comparison(tmp_path: Path):
    write_run(tmp_path / "sd", "sd", 0, 72.0, config={"model.kwargs.drop_rate": 0.3})
    write_run(tmp_path / "step", "step", 0, 70.0)  # kwargs: {} (flattening drops it)
    write_run(tmp_path / "cosine", "cosine", 0, 70.5, config={"model.kwargs.drop_rate": 0.3})
    report, text = report_of(tmp_path)
    assert [g.baseline.method for g in report.gains] == ["cosine"]  # same kwargs: compared
    (skipped,) = report.not_compared
    assert skipped.baseline.method == "step"
    assert skipped.reasons == ["model.kwargs.drop_rate: 0.3 vs not set"]
    # keys the other method does not read never block: SD's cycle length, step's milestones
    assert "cycle_length" not in text.split("## Baselines not compared")[1]


# 7. no interval is not "no interval includes 0"
def test_single_seed_gains_say_no_interval_could_be_computed(tmp_path: Path):
    write_run(tmp_path / "sd", "sd", 0, 72.0)
    write_run(tmp_path / "step", "step", 0, 70.0)
    _, text = report_of(tmp_path)
    assert "No 95 % interval includes 0" not in text
    assert "No 95 % interval could be computed" in text
    assert "no interval: fewer than 2 runs on a side" in text


# 8. zero variance: no degenerate interval, and the right reason
def test_zero_variance_gives_no_interval_and_says_why(tmp_path: Path):
    for seed in (0, 1, 2):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 70.0)
        write_run(tmp_path / f"step{seed}", "step", seed, 69.0)
    report, text = report_of(tmp_path)
    (gain,) = report.gains
    assert gain.diff.paired and gain.diff.ci95 is None and gain.diff.includes_zero is None
    assert "no interval: every value equal" in text
    assert "fewer than 2 runs" not in text and "No computed 95 % interval" not in text
    assert "30.00 ± 0.00 [no interval: every value equal]" in text
    assert row_record(report.rows[0])["top1_err_ci95_low"] is None


# 8. malformed and non-finite summaries are listed, never averaged, never a crash
def test_malformed_runs_are_listed_with_their_reason(tmp_path: Path, capsys):
    for seed in (0, 1):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 70.0 + seed)
    bad = {
        "nan": ("summary.json", '{"complete": true, "student/top1": NaN}'),
        "inf": ("summary.json", '{"complete": true, "student/top1": 7, "teacher/top1": -Infinity}'),
        "text": ("summary.json", '{"complete": true, "student/top1": "71.5"}'),
        "list": ("summary.json", "[1, 2]"),
        "number_line": ("metrics.jsonl", '{"epoch": 1}\n5\n'),
        "config_list": (".hydra/config.yaml", "- 1\n- 2\n"),
    }  # fmt: skip
    for name, (file, content) in bad.items():
        folder = write_run(tmp_path / name, "sd", 7, 70.0)
        (folder / file).write_text(content)
    # killed: its metrics.jsonl says how far it got (a line that is not a mapping is no epoch);
    # a complete run's metrics.jsonl is not read at all (issue 28.12: its numbers are the
    # summary's)
    (tmp_path / "number_line" / "summary.json").unlink()
    assert main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    reasons = {
        "nan": "student/top1 is nan, not a finite number",
        "inf": "teacher/top1 is -inf, not a finite number",
        "text": "student/top1 is '71.5', not a number",
        "list": "summary.json is a list, not a mapping",
        "number_line": "incomplete: 1 of 240 epochs done, no summary.json",
        "config_list": ".hydra/config.yaml is a list, not a mapping",
    }
    for name, why in reasons.items():
        assert f"not averaged: {tmp_path / name}: " in err and why in err, name
    with open(tmp_path / "report" / "results.csv") as f:
        assert "nan" not in f.read()
    report, _ = report_of(tmp_path)
    assert [r.n for r in report.rows] == [2] and len(report.incomplete) == len(bad)


# 9. pairing on 2 shared seeds of 10 would drop 16 of 20 runs: Welch over all of them
def test_few_shared_seeds_are_not_paired(tmp_path: Path):
    for seed in range(10):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 71.0 + (seed % 3) * 0.5)
        write_run(tmp_path / f"step{seed + 8}", "step", seed + 8, 70.0 + (seed % 4) * 0.4)
    report, text = report_of(tmp_path)
    record = gain_record(report.gains[0])
    assert record["pairing"] == "unpaired" and (record["n_sd"], record["n_base"]) == (10, 10)
    sd = [71.0 + (s % 3) * 0.5 for s in range(10)]
    step = [70.0 + (s % 4) * 0.4 for s in range(10)]
    assert record["gain"] == pytest.approx(statistics.fmean(sd) - statistics.fmean(step))
    assert "only when both rows have exactly the same seeds" in text


# 11 (issue 26): links inside the given folders are listed, never followed; a given folder may
# itself be a link (the user's choice)
def test_links_under_the_given_folders_are_listed_not_followed(tmp_path: Path):
    scratch, results = tmp_path / "scratch", tmp_path / "results"
    write_run(scratch / "sd0", "sd", 0, 70.0)
    write_run(scratch / "sd1", "sd", 1, 71.0)
    results.mkdir()
    os.symlink(scratch / "sd0", results / "sd0")
    os.symlink(scratch, results / "all")
    os.symlink(results, scratch / "loop")
    report, text = report_of(results)
    assert report.runs == [] and report.rows == []
    for name in ("sd0", "all"):
        note = next(n for n in report.notes if n.startswith(str(results / name)))
        assert "symbolic link" in note and "not followed" in note and "give the link" in note
    report, _ = report_of(results, scratch)  # the target given as a PATH: read once
    assert [r.n for r in report.rows] == [2]
    assert any(n.startswith(str(scratch / "loop")) for n in report.notes)
    os.symlink(scratch, tmp_path / "linked_root")
    report, _ = report_of(tmp_path / "linked_root")
    assert [r.n for r in report.rows] == [2]


# 11. one PNG per run only when asked; otherwise the run's own curves.png is linked
def test_run_plots_are_drawn_only_when_asked(tmp_path: Path):
    for seed in (0, 1):
        run = write_run(tmp_path / "runs" / f"sd{seed}", "sd", seed, 70.0)
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "student/top1": 60.0}) + "\n")
    (tmp_path / "runs" / "sd0" / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert not list((out / "runs").glob("*.png"))
    text = (out / "RESULTS.md").read_text()
    assert "[curves](../runs/sd0/curves.png)" in text and "sd1" not in text.split("## Runs")[1]
    assert main([str(tmp_path / "runs"), "--out", str(out), "--run-plots"]) == 0
    assert len(list((out / "runs").glob("*.png"))) == 2


# 21. the run plot shows the validation split's accuracy when there is one
def test_run_plot_shows_val_top1(tmp_path: Path):
    run_dir = write_run(tmp_path / "sd", "sd", 0, 70.0)
    lines = [{"epoch": e, "cycle": 1, "lr": 0.1, "student/top1": 50.0 + e, "val/top1": 48.0 + e}
             for e in (1, 2)]  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    report, _ = report_of(tmp_path)
    fig = plots.run_figure(report.runs[0])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "student top-1 (val split)" in labels
    val = fig.axes[0].get_lines()[labels.index("student top-1 (val split)")]
    assert list(val.get_ydata()) == [49.0, 50.0]


# 10 and 21. a sweep over schedule.cycles: errors, in cycles
def test_cycles_sweep_is_shown_in_cycles_and_in_errors(tmp_path: Path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    record = {"swept": ["schedule.cycles", "distill.temperature"]}
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(record))
    for cycles in (2, 4):
        for t in (1.0, 4.0):
            write_run(sweep / f"c{cycles}_T{t}", "sd", 0, 70.0 + cycles + t,
                      config={"schedule.epochs": 8, "schedule.cycles": cycles,
                              "schedule.cycle_length": None, "distill.temperature": t},
                      summary={"cycles": cycles, "epochs": 8})  # fmt: skip
    report, text = report_of(sweep)
    assert report.sweeps[0].axes == ["distill.temperature", "schedule.cycles"]
    assert set(report.sweeps[0].cells()) == {(1.0, 2), (1.0, 4), (4.0, 2), (4.0, 4)}
    assert "| distill.temperature | schedule.cycles | final top-1 err (%) |" in text
    assert "| 4.0 | 4 | 22.00 | 1 | 0 |" in text  # 100 - (70 + 4 + 4)


# 11. the report benchmark runs (a smoke test: the timing itself is in docs/PERFORMANCE.md)
def test_report_benchmark_runs(capsys):
    bench = load_script("bench_report")
    bench.main(["--runs", "8", "--epochs", "2", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["runs"], result["rows"]) == (8, 4) and result["report_cpu_s"] > 0
