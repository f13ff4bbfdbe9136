"""Issue 28's review of sdrun-report, on synthetic run folders (exact numbers against scipy, no
training): what a careful reader needs beside each number."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from report_builder import write_run
from scipy import stats as scipy_stats

from sdrun.report import build_report, gain_record, main, methods_figure, row_record
from sdrun.report.latex import results_tex
from sdrun.report.markdown import results_md


def report_of(*paths: Path, **kwargs):
    report = build_report(list(paths), paths[0] / "report", **kwargs)
    return report, "\n".join(results_md(report))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# 1. equal values up to float rounding give no interval, never a zero-width one
def test_values_equal_up_to_rounding_give_no_interval(tmp_path: Path):
    for seed in range(5):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 71.29)
        write_run(tmp_path / f"step{seed + 10}", "step", seed + 10, 70.13)  # unpaired
    report, text = report_of(tmp_path)
    assert "28.71 ± 0.00 [no interval: every value equal]" in text
    assert "[28.71, 28.71]" not in text
    assert row_record(report.rows[0])["top1_err_ci95_low"] is None
    (gain,) = report.gains
    assert gain.diff.pairing == "unpaired" and gain.diff.ci95 is None
    assert gain.diff.no_interval == "no interval: every value equal"
    assert gain_record(gain)["gain_ci95_low"] is None


def welch(a: list[float], b: list[float]):
    """scipy's Welch t-test of mean(a) - mean(b): (result, 95 % interval)."""
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    return result, result.confidence_interval(0.95)


# 11. three runs against three sharing two seeds: Welch over all six, not a pair of two
def test_runs_that_share_only_some_seeds_are_compared_over_every_run(tmp_path: Path):
    sd, step = {0: 71.2, 1: 71.9, 2: 71.5}, {1: 70.6, 2: 70.9, 3: 70.2}
    for seed, top1 in sd.items():
        write_run(tmp_path / f"sd{seed}", "sd", seed, top1)
    for seed, top1 in step.items():
        write_run(tmp_path / f"step{seed}", "step", seed, top1)
    report, text = report_of(tmp_path)
    record = gain_record(report.gains[0])
    result, ci = welch(list(sd.values()), list(step.values()))
    assert record["pairing"] == "unpaired" and (record["n_sd"], record["n_base"]) == (3, 3)
    assert record["gain_df"] == pytest.approx(result.df)  # 9: Welch's df, to rebuild it
    assert (record["gain_ci95_low"], record["gain_ci95_high"]) == pytest.approx((ci.low, ci.high))
    assert ci.low > 0  # every run shows what a pair of two (df 1) would not
    assert f"| {result.df:.1f} | [{ci.low:.2f}, {ci.high:.2f}] |" in text


# 3, 5, 9. the primary SD row's k comparisons: which are primary, df, simultaneous intervals,
# and which way each interval lies
def test_gains_say_their_direction_their_number_and_their_joint_interval(tmp_path: Path):
    values = {"sd": (66.1, 67.0, 66.4), "cyclic": (69.0, 69.8, 69.5), "cosine": (69.2, 70.1, 69.4),
              "step": (66.0, 67.3, 66.9)}  # fmt: skip
    for method, tops in values.items():
        for seed, top1 in enumerate(tops):
            write_run(tmp_path / f"{method}{seed}", method, seed, top1)
    report, text = report_of(tmp_path)
    records = {g.baseline.label: gain_record(g) for g in report.gains}
    assert {r["n_comparisons"] for r in records.values()} == {3}
    assert records["cyclic"]["comparison"] == "primary: the teacher alone (same schedule)"
    assert records["cosine"]["comparison"] == "primary: SD's recipe vs the CE baseline"
    assert records["step"]["comparison"] == "" and records["step"]["role"] == "primary"
    for name, record in records.items():
        diffs = [a - b for a, b in zip(values["sd"], values[name])]  # paired on seeds 0-2
        half = scipy_stats.t.ppf(1 - 0.05 / (2 * 3), 2) * scipy_stats.sem(diffs)
        mean = sum(diffs) / 3
        assert record["gain_df"] == 2 and record["simultaneous_level"] == pytest.approx(
            1 - 0.05 / 3
        )
        assert (record["gain_ci_simultaneous_low"], record["gain_ci_simultaneous_high"]) == (
            pytest.approx((mean - half, mean + half)))  # fmt: skip
    assert "**3 comparisons**" in text and "1 - 0.95^3 = 14%" in text
    below = "lies **below 0** (the first row worse) for: sd vs cyclic (resnet56), sd vs cosine"
    assert f"The 95 % interval {below} (resnet56)." in text
    assert "includes 0** (no difference shown at this number of seeds) for: sd vs step" in text
    assert "No computed 95 % interval includes 0" not in text


# 4. with a sweep in the same folder: one primary SD row (the preset's), the cells exploratory
def test_one_sd_row_is_primary_and_sweep_cells_are_exploratory(tmp_path: Path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for seed in (0, 1):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 70.0 + seed)
        write_run(tmp_path / f"cosine{seed}", "cosine", seed, 69.0 + seed)
        for t in (1.0, 4.0):
            write_run(sweep / f"T{t}_{seed}", "sd", seed, 72.0 + t + seed,
                      config={"distill.temperature": t})  # fmt: skip
    report, text = report_of(tmp_path)
    roles = {g.sd.label: g.role for g in report.gains}
    assert roles == {"sd (temperature=2.0)": "primary", "sd (temperature=1.0)": "exploratory",
                     "sd (temperature=4.0)": "exploratory"}  # fmt: skip
    assert [g.family_size for g in report.gains if g.role == "primary"] == [1]
    primary_part, exploratory_part = text.split("### Exploratory: the other SD rows")
    assert "sd (temperature=2.0) (SD's preset recipe, outside any sweep)" in primary_part
    assert "a choice made on the test set" in exploratory_part.split("## ")[0]
    assert "sd (temperature=4.0) | cosine |" in exploratory_part


# 6 and 13. each row's recipe, the table's shared recipe, the documented method order
def test_rows_say_their_recipe_in_the_documented_method_order(tmp_path: Path):
    cosine = {"schedule.name": "cosine", "schedule.cycle_length": None}
    for method, distill, extra in (("byot", "byot", {}), ("tfkd", "tfkd", {"schedule.epochs": 200}),
                                   ("ls", "ls", {}), ("pskd", "pskd", {})):  # fmt: skip
        write_run(tmp_path / method, "cosine", 0, 70.0,
                  config={**cosine, "distill.name": distill, **extra})  # fmt: skip
    for method in ("step", "cosine", "cyclic", "sd"):
        write_run(tmp_path / method, method, 0, 70.0)
    report, text = report_of(tmp_path)
    assert [row.method for row in report.rows] == [
        "sd", "cyclic", "cosine", "step", "ls", "tfkd", "pskd", "byot"]  # fmt: skip
    lines = {line.split(" | ")[1]: line.split(" | ")[2] for line in text.splitlines()
             if line.startswith("| resnet56 |")}  # fmt: skip
    assert lines["sd"] == lines["cyclic"] == "4 cosine cycles x 60 ep"
    assert lines["cosine"] == lines["ls"] == "1 cosine cycle x 240 ep"
    assert lines["tfkd"] == "1 cosine cycle x 200 ep"
    assert lines["step"] == "step 240 ep (x0.1 at 150, 180, 210)"
    assert "Recipe of every row: batch 128, sgd, lr 0.1, momentum 0.9, weight decay 0.0005" in text
    assert "differing by row: epochs" in text
    assert "Smoke run" not in text
    caption = results_tex(report.rows).split(r"\caption{", 1)[1].split("}\n", 1)[0]
    assert "Recipe: batch 128, sgd, lr 0.1, momentum 0.9, weight decay 0.0005" in caption
    assert "Schedules: sd, cyclic: 4 cosine cycles x 60 ep; cosine, " in caption
    assert "; tfkd: 1 cosine cycle x 200 ep" in caption and "SMOKE" not in caption


# 13. a smoke run says its numbers mean nothing; intervals stop at 0 and 100 %; LaTeX beside it
def test_smoke_runs_clipped_intervals_and_the_latex_table(tmp_path: Path):
    for seed, top1 in enumerate((1.0, 2.0, 12.0)):  # errors 99, 98, 88: t reaches past 100
        write_run(tmp_path / f"sd{seed}", "sd", seed, top1,
                  config={"schedule.epochs": 2, "schedule.cycle_length": 1,
                          "model.name": "net\\input{x}_1",
                          "optim.name": "sgd\\input{y}%"})  # fmt: skip
    report, text = report_of(tmp_path)
    assert "> **Smoke run: these numbers mean nothing.** 1 of 1 rows" in text
    assert "2 cosine cycles x 1 ep, epochs 2, SMOKE" not in text  # epochs are in the schedule
    assert "2 cosine cycles x 1 ep, SMOKE" in text
    errors = [99.0, 98.0, 88.0]
    high = scipy_stats.t.interval(0.95, 2, loc=95.0, scale=scipy_stats.sem(errors))[1]
    assert high > 100 and "100.00] (clipped at 100 %)" in text
    assert row_record(report.rows[0])["top1_err_ci95_high"] == pytest.approx(high)  # CSV: raw
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    tex = (tmp_path / "out" / "results.tex").read_text()
    assert r"Method & net\textbackslash{}input\{x\}\_1 \\" in tex
    assert r"sd & 95.00 $\pm$ 3.51 \scriptsize{(3)} \\" in tex and "SMOKE RUN" in tex
    # a folder's values reach the caption's recipe too: printed, never run or cut
    assert r"Recipe: 2 epochs, batch 128, sgd\textbackslash{}input\{y\}\%, lr 0.1" in tex
    assert "\\input{" not in tex


# 13. each self-distillation method's gain over cosine, its own k comparisons
def test_each_self_distillation_method_has_its_gain_over_cosine(tmp_path: Path):
    cosine = {"schedule.name": "cosine", "schedule.cycle_length": None}
    values = {"cosine": (69.0, 69.6, 69.3), "ls": (70.0, 70.9, 70.1), "pskd": (71.1, 71.4, 71.9)}
    for method, tops in values.items():
        distill = {**cosine, "distill.name": method if method != "cosine" else "none"}
        for seed, top1 in enumerate(tops):
            write_run(tmp_path / f"{method}{seed}", "cosine", seed, top1, config=distill)
    report, text = report_of(tmp_path)
    assert report.gains == []  # no SD row
    records = {g.sd.label: gain_record(g) for g in report.family_gains}
    assert set(records) == {"ls", "pskd"}
    for name, record in records.items():
        diffs = [a - b for a, b in zip(values[name], values["cosine"])]
        assert record["gain"] == pytest.approx(sum(diffs) / 3)
        assert (record["role"], record["n_comparisons"], record["baseline"]) == (
            "over cosine",
            2,
            "cosine",
        )
    assert "## Each self-distillation method's gain over cosine (the CE baseline)" in text
    above = "lies **above 0** (the first row better) for: ls vs cosine (resnet56), pskd vs cosine"
    assert f"The 95 % interval {above} (resnet56)." in text
    assert "- every method vs cosine (resnet56): **2 comparisons**" in text


# 10. one fixed, distinct colour and marker per method in every figure
def test_each_method_keeps_its_colour_and_marker_in_every_figure(tmp_path: Path):
    methods = ["sd", "cyclic", "cosine", "step", "ls", "tfkd", "cskd", "pskd", "dlb", "byot"]
    cosine = {"schedule.name": "cosine", "schedule.cycle_length": None}
    for method in methods:
        kind = method if method in ("sd", "cyclic", "cosine", "step") else "cosine"
        extra = {} if kind != "cosine" or method == "cosine" else {**cosine, "distill.name": method}
        write_run(tmp_path / "all" / method, kind, 0, 70.0, config=extra)
    write_run(tmp_path / "all" / "kd", "kd", 0, 70.0,
              config={"distill.teacher_checkpoint": str(tmp_path / "all" / "cosine")})  # fmt: skip
    write_run(tmp_path / "all" / "kd2", "kd", 0, 70.0,
              config={"distill.teacher_checkpoint": str(tmp_path / "all" / "kd")})  # fmt: skip
    styles = legend_styles(report_of(tmp_path / "all")[0].rows)
    assert len(styles) == 12 and len({color for color, _ in styles.values()}) == 12
    assert len({marker for _, marker in styles.values()}) == 12
    write_run(
        tmp_path / "two" / "tfkd", "cosine", 0, 70.0, config={**cosine, "distill.name": "tfkd"}
    )
    write_run(tmp_path / "two" / "sd", "sd", 0, 70.0)
    two = legend_styles(report_of(tmp_path / "two")[0].rows)
    assert two == {k: styles[k] for k in ("sd", "tfkd")} and two["sd"] != two["tfkd"]


def legend_styles(rows) -> dict[str, tuple[str, str]]:
    """{legend label: (colour, marker)} of the methods figure of `rows`."""
    from matplotlib.colors import to_hex

    ax = methods_figure(rows).axes[0]
    handles = ax.get_figure().legends[0].legend_handles
    return {h.get_label(): (to_hex(h.get_color()), h.get_marker()) for h in handles}


# 7. every published value says which epoch it reports, and when its placement is assumed
def test_published_values_say_their_selection_and_assumed_placement(tmp_path: Path):
    from sdrun.report.references import REFERENCES

    assert all(ref.selection for ref in REFERENCES)  # none reads as a final epoch unless it is
    write_run(tmp_path / "step", "step", 0, 70.0, config={"model.name": "resnet32"})
    write_run(tmp_path / "sd", "sd", 0, 71.0, config={"model.name": "resnet32"})
    report, text = report_of(tmp_path)
    step = next(row for row in report.rows if row.method == "step")
    paper, crd = sorted(step.references, key=lambda r: r[0].top1)
    assert (
        "selection: final epoch vs not stated in the source read (it may be a best epoch)"
        in paper[1]
    )
    assert any(line.startswith("placed beside step by assumption") for line in paper[1])
    assert "selection: final epoch vs best test epoch (RepDistiller's best_acc)" in crd[1][-1]
    cell = "31.61 (recipe not given; epoch not stated; placement assumed); 28.86 (recipe differs"
    assert cell in text and "28.71 (recipe not given; epoch not stated)" in text


# 5. a family of comparisons none of which has an interval has nothing to correct
def test_comparisons_without_intervals_claim_no_correction(tmp_path: Path):
    for method in ("sd", "cyclic", "cosine"):
        write_run(tmp_path / method, method, 0, 70.0)  # one seed each: no interval anywhere
    _, text = report_of(tmp_path)
    line = "- sd (resnet56): **2 comparisons**, none with an interval (each note says why)"
    assert f"{line}: nothing to correct." in text
    assert "simultaneous* intervals hold" not in text
    assert "exactly the same seeds, two or more, else *unpaired*" in text
