"""The report's transfer table on synthetic run folders (issue 19, items 6 and 10): rows keyed on
the backbone's pre-training recipe, every run counted, one statistic (mean ± SE)."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from report_builder import backbone_run, write_transfer_run

from sdrun.report import main
from sdrun.report.scan import scan
from sdrun.report.transfer import build_rows, gain, split_runs
from sdrun.report.transfer_gains import sd_gains

BASE = {("sd", 2.0): 40.0, ("sd", 4.0): 38.0, ("cosine", None): 37.0}


def value(method: str, t, backbone_seed: int, seed: int) -> float:
    return BASE[(method, t)] + backbone_seed + 0.1 * seed * (1 + backbone_seed)


def grid(root: Path) -> None:
    """SD backbones with T=2 and T=4 and cosine ones, 3 pre-training seeds each, each
    fine-tuned with 3 seeds: 27 transfer runs."""
    for (method, t), _ in BASE.items():
        for b in (0, 1, 2):
            extra = {} if t is None else {"distill__temperature": t}
            backbone = backbone_run(root / "pre" / f"{method}{t}_{b}", method, b, **extra)
            for seed in (0, 1, 2):
                write_transfer_run(root / "ft" / f"{method}{t}_{b}_{seed}", backbone, method,
                                   seed, value(method, t, b, seed))  # fmt: skip


def transfer_rows(*roots: Path):
    """The transfer rows of the runs under `roots` (the backbones' folders among them: the
    report reads nothing outside the folders it is given)."""
    found = scan(roots)
    return build_rows(split_runs(found.runs)[1], found.scope)


def test_rows_are_pretraining_recipes_over_every_backbone_and_fine_tuning_seed(tmp_path: Path):
    grid(tmp_path)
    # backbone sd T=2 seed 0 fine-tuned again with seed 0: the newer run counts, the other is named
    again = write_transfer_run(tmp_path / "ft" / "again", tmp_path / "pre" / "sd2.0_0", "sd",
                               0, 45.0)  # fmt: skip
    rows, notes = transfer_rows(tmp_path / "ft", tmp_path / "pre")
    labels = [r.label for r in rows]
    assert labels == ["sd (cifar100) [backbone distill.temperature=2.0]",
                      "sd (cifar100) [backbone distill.temperature=4.0]",
                      "cosine (cifar100)"]  # fmt: skip
    assert all(len(r.runs) == 9 and len(r.by_backbone()) == 3 for r in rows)
    (note,) = notes
    assert str(tmp_path / "ft" / "sd2.0_0_0") in note and str(again) in note
    assert main([str(tmp_path / "ft"), str(tmp_path / "pre")]) == 0
    with open(tmp_path / "ft" / "report" / "transfer.csv", newline="") as f:
        records = {r["pretraining"] + r["variant"]: r for r in csv.DictReader(f)}
    t4 = records["sd (cifar100)backbone distill.temperature=4.0"]
    assert (t4["n_runs"], t4["n_backbones"], t4["n"], t4["over"]) == ("9", "3", "3", "backbones")
    # one sample per backbone: the mean of its fine-tuning runs; SE over the 3 backbones
    means = [statistics.fmean(value("sd", 4.0, b, s) for s in (0, 1, 2)) for b in (0, 1, 2)]
    assert float(t4["mean"]) == pytest.approx(statistics.fmean(means), abs=1e-4)
    assert float(t4["se"]) == pytest.approx(statistics.stdev(means) / 3**0.5, abs=1e-4)
    assert float(t4["ci95_high"]) == pytest.approx(
        statistics.fmean(means) + 4.3027 * statistics.stdev(means) / 3**0.5, abs=1e-3
    )
    text = (tmp_path / "ft" / "report" / "RESULTS.md").read_text()
    assert "mean ± SE [95 % interval]" in text and "mean ± std" not in text
    assert "9 runs = 3 backbones x 3 fine-tuning seeds" in text
    assert "fine-tuned twice with seed 0" in text
    # SD T=4 against cosine, paired on the pre-training seed
    t4_row, cosine = rows[1], rows[2]
    est = gain(t4_row, cosine)
    cos = [statistics.fmean(value("cosine", None, b, s) for s in (0, 1, 2)) for b in (0, 1, 2)]
    assert est.pairing == "paired n=3"
    assert est.gain == pytest.approx(statistics.fmean(means) - statistics.fmean(cos))


def test_one_backbone_rows_pair_on_the_fine_tuning_seed_when_most_are_shared(tmp_path: Path):
    sd = backbone_run(tmp_path / "pre" / "sd", "sd", 0)
    cosine = backbone_run(tmp_path / "pre" / "cosine", "cosine", 0)
    for seed, v in ((0, 60.0), (1, 62.0)):
        write_transfer_run(tmp_path / "a" / f"sd{seed}", sd, "sd", seed, v)
    for seed, v in ((1, 58.0), (2, 60.0), (3, 62.0)):
        write_transfer_run(tmp_path / "a" / f"cos{seed}", cosine, "cosine", seed, v)
    (sd_row, cos_row), _ = transfer_rows(tmp_path / "a", tmp_path / "pre")
    assert sd_row.unit == cos_row.unit == "fine-tuning runs (one backbone)"
    one_shared = gain(sd_row, cos_row)
    assert one_shared.pairing == "unpaired" and (one_shared.n_a, one_shared.n_b) == (2, 3)
    assert one_shared.gain == pytest.approx(61.0 - 60.0)
    for seed, v in ((0, 59.0), (1, 60.0)):
        write_transfer_run(tmp_path / "b" / f"cos{seed}", cosine, "cosine", seed, v)
    write_transfer_run(tmp_path / "b" / "sd0", sd, "sd", 0, 60.0)
    write_transfer_run(tmp_path / "b" / "sd1", sd, "sd", 1, 62.0)
    (sd_row, cos_row), _ = transfer_rows(tmp_path / "b", tmp_path / "pre")
    paired = gain(sd_row, cos_row)
    assert paired.pairing == "paired n=2" and paired.gain == pytest.approx(1.5)


# issue 28, items 2 and 8: backbones of different recipes are not compared; each gain says its unit
def test_backbones_of_other_recipes_are_not_compared_and_gains_say_their_unit(tmp_path: Path):
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    for b in (0, 1, 2):
        sd = backbone_run(pre / f"sd{b}", "sd", b)
        short = backbone_run(pre / f"cos{b}", "cosine", b, schedule__epochs=2,
                             dataset__batch_size=64)  # fmt: skip
        same = backbone_run(pre / f"cosfull{b}", "cosine", b)
        for name, backbone, method in (("sd", sd, "sd"), ("cos", short, "cosine"),
                                       ("cosfull", same, "cosine")):  # fmt: skip
            write_transfer_run(ft / f"{name}{b}", backbone, method, 0, 40.0 + b + (name == "sd"))
    rows, _ = transfer_rows(ft, pre)
    gains, skipped = sd_gains(rows)
    variant = "backbone dataset.batch_size=128, backbone schedule.epochs=240"
    assert [(g.sd.method, g.other.label) for g in gains] == [
        ("sd", f"cosine (cifar100) [{variant}]")
    ]
    assert gains[0].unit == "3 backbones" and gains[0].diff.gain == pytest.approx(1.0)
    (other,) = skipped
    assert other.reasons == ["backbone dataset.batch_size: 128 vs 64",
                             "backbone schedule.epochs: 240 vs 2"]  # fmt: skip
    assert main([str(ft), "--with", str(pre), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "Backbones not compared, and why:" in text and "schedule.epochs: 240 vs 2" in text
    with open(tmp_path / "out" / "transfer_gains.csv", newline="") as f:
        (record,) = list(csv.DictReader(f))
    assert (record["unit"], record["gain_df"]) == ("3 backbones", "2")
    one = [r for r in rows if r.method == "sd"][0]
    one.runs = one.runs[:1]  # a row of one backbone: its fine-tuning runs are the samples
    assert gain_unit(one, rows[-1]) == (
        "1 fine-tuning run of one backbone vs 3 backbones: mixes pre-training and fine-tuning "
        "spread")  # fmt: skip


def gain_unit(sd, other) -> str:
    from sdrun.report.transfer_gains import TransferGain

    return TransferGain(sd, other, gain(sd, other)).unit
