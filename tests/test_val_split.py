"""The validation split (dataset.val_split): which images it holds out, that training never
sees them, what a run reports on them, and the report's column for the epoch they select."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from folder_helpers import image_numbers, write_image_folder
from helpers import read_jsonl

from sdrun.config import DatasetConfig
from sdrun.data import build_loaders
from sdrun.data.folder import class_balanced_order
from sdrun.data.holdout import holdout_indices
from sdrun.errors import ConfigError
from sdrun.report import write_report


def loaders(cfg: DatasetConfig, seed: int = 0, rank: int = 0, world_size: int = 1):
    return build_loaders(cfg, seed=seed, device=torch.device("cpu"), channels_last=False,
                         rank=rank, world_size=world_size)  # fmt: skip


def images_of(batches) -> list[bytes]:
    """Each image of an epoch (normalized, unaugmented for eval) as bytes, to compare sets."""
    return [x.numpy().tobytes() for batch in batches for x in batch.images]


def test_held_out_indices_are_class_balanced_fixed_and_apart_from_training():
    labels = torch.arange(300) % 10  # 10 classes of 30
    torch.manual_seed(123)  # the split must not follow the global RNG (or the run's seed)
    train, val = holdout_indices(labels, 25)
    torch.manual_seed(7)
    again_train, again_val = holdout_indices(labels, 25)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    per_class = torch.bincount(labels[val], minlength=10)
    assert per_class.min() == 2 and per_class.max() == 3  # 25 over 10 classes
    assert sorted(train.tolist() + val.tolist()) == list(range(300))  # disjoint, complete


def test_cifar_split_holds_out_the_same_images_for_every_seed_and_never_trains_on_them(
    cifar100_root: Path,
):
    cfg = DatasetConfig(root=str(cifar100_root), download=False, batch_size=32,
                        eval_batch_size=50, val_split=40)  # fmt: skip
    first, second = loaders(cfg, seed=0), loaders(cfg, seed=1)
    val = images_of(first.val.epoch(0))
    assert len(val) == first.val.num_samples == 40
    assert val == images_of(second.val.epoch(0))  # the run's seed does not move the split
    whole = loaders(DatasetConfig(root=str(cifar100_root), download=False, batch_size=256,
                                  eval_batch_size=256))  # fmt: skip
    raw_all = {x.numpy().tobytes() for x in whole.train.images}  # the uint8 images they hold
    raw_kept = {x.numpy().tobytes() for x in first.train.images}
    raw_val = {x.numpy().tobytes() for x in first.val.images}
    assert len(raw_kept) == 256 - 40 and not raw_kept & raw_val
    assert raw_kept | raw_val == raw_all
    assert first.train.num_samples == (256 - 40) // 32 * 32
    # labels are class-balanced: 40 images over 100 classes, at most one per class
    assert torch.bincount(first.val.labels, minlength=100).max() == 1


def test_validation_shards_of_two_ranks_count_each_image_once(cifar100_root: Path):
    cfg = DatasetConfig(root=str(cifar100_root), download=False, batch_size=32,
                        eval_batch_size=16, val_split=33)  # fmt: skip
    shards = [images_of(loaders(cfg, rank=r, world_size=2).val.epoch(0)) for r in (0, 1)]
    single = images_of(loaders(cfg).val.epoch(0))
    assert len(shards[0]) + len(shards[1]) == 33
    assert sorted(shards[0] + shards[1]) == sorted(single)


def test_image_folder_split_is_balanced_and_read_with_the_eval_transform(tmp_path: Path):
    root = write_image_folder(tmp_path / "folders", num_classes=3, n_train=8, n_val=4)
    cfg = DatasetConfig(name="imagenet", root=str(root), batch_size=4, eval_batch_size=4,
                        image_size=32, eval_resize=36, num_workers=0, val_split=6)  # fmt: skip
    data = loaders(cfg)
    labels = torch.cat([batch.labels for batch in data.val.epoch(0)])
    assert torch.bincount(labels, minlength=3).tolist() == [2, 2, 2]
    held = [n for x, *_ in data.val.epoch(0) for n in image_numbers(x)]
    assert held == [n for x, *_ in data.val.epoch(3) for n in image_numbers(x)]  # no augmentation
    trained = {
        n for epoch in range(3) for x, *_ in data.train.epoch(epoch) for n in image_numbers(x)
    }
    assert len(held) == 6 and not trained & set(held)
    assert len(data.train.loader.dataset) == 3 * 8 - 6 and data.test.num_samples == 3 * 4


@pytest.mark.parametrize(
    "val_split,what", [(64, "whole training set"), (40, "fewer than one batch")]
)
def test_a_split_that_leaves_nothing_to_train_is_one_line(val_split: int, what: str):
    cfg = DatasetConfig(name="fake", num_train=64, num_test=8, num_classes=4, image_size=8,
                        batch_size=32, val_split=val_split)  # fmt: skip
    with pytest.raises(ConfigError) as err:
        loaders(cfg)
    message = str(err.value)
    assert f"dataset.val_split={val_split}" in message and what in message
    assert "\n" not in message


def test_a_small_class_keeps_a_training_image_and_the_remainder_is_spread():
    """Class 0 has 2 images, the others 30: the split takes at most one of class 0; the round
    that fits only partly goes to classes in a fixed random order, not the lowest ids."""
    labels = torch.cat([torch.zeros(2, dtype=torch.long), torch.arange(1, 10).repeat(30)])
    train, val = holdout_indices(labels, 25)
    per_class = torch.bincount(labels[val], minlength=10)
    assert per_class[0] == 1 and per_class.sum() == 25
    assert labels[train].unique().tolist() == list(range(10))  # every class still trains
    assert per_class[1:].max() - per_class[1:].min() == 1  # 24 over 9 classes: 2 or 3 each
    assert set(torch.nonzero(per_class[1:] == 3).flatten().add(1).tolist()) != {1, 2, 3, 4, 5, 6}


def test_a_split_that_would_empty_a_class_is_refused_in_one_line():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])  # at most 0 + 1 + 2 can be held out
    assert len(holdout_indices(labels, 3)[1]) == 3
    with pytest.raises(ConfigError) as err:
        holdout_indices(labels, 4)
    message = str(err.value)
    assert "dataset.val_split=4" in message and "at most 3" in message and "\n" not in message


def test_a_balanced_split_of_whole_rounds_holds_out_what_it_always_did():
    """Classes of equal size, val_split a multiple of their number (5000 of CIFAR-100's
    50000): the first images of the class-balanced order, as before the rule above."""
    labels = torch.arange(600) % 12
    labels = labels[torch.randperm(600, generator=torch.Generator().manual_seed(3))]
    _, val = holdout_indices(labels, 48)
    assert torch.equal(val, class_balanced_order(labels.tolist(), seed=0)[:48].sort().values)


def test_run_reports_validation_accuracy_and_the_epoch_it_selects(val_run: Path):
    records = read_jsonl(val_run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert 0 <= r["val/top1"] <= r["val/top5"] <= 100
    assert records[0]["teacher/val_top1"] is None  # no teacher during cycle 1
    assert records[1]["teacher/val_top1"] is not None  # cycle 1's snapshot, on the val split
    summary = json.loads((val_run / "summary.json").read_text())
    assert summary["val_split"] == 24 and summary["cycles"] == 2
    assert summary["val/top1"] == records[-1]["val/top1"]
    best = max(records, key=lambda r: r["val/top1"])  # max() keeps the first of equals
    assert summary["val/best_epoch"] == best["epoch"]
    assert summary["val/best_top1"] == best["val/top1"]
    assert summary["student/top1_at_val_best"] == best["student/top1"]  # test accuracy there


def test_report_has_the_test_error_at_the_epoch_validation_selects(val_run: Path, tmp_path):
    # out of its search (a trial is in no row of the main table): a run with a val split
    run = shutil.copytree(val_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.pt"))
    report = write_report([run], tmp_path / "report")
    assert len(report.rows) == 1
    with open(tmp_path / "report" / "results.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    summary = json.loads((val_run / "summary.json").read_text())
    expected = 100.0 - summary["student/top1_at_val_best"]
    assert float(row["val_selected_err_mean"]) == pytest.approx(expected, abs=1e-3)
    assert "val-selected epoch err" in (tmp_path / "report" / "RESULTS.md").read_text()


def test_the_runs_curves_show_validation_accuracy(val_run: Path, tmp_path: Path, monkeypatch):
    """curves.png (sdrun/runfolder/run_plots.py) of a run with a split: the val/top1 line is
    drawn."""
    import yaml
    from matplotlib.figure import Figure

    from sdrun.runfolder.run_plots import final_plots

    drawn: list[Figure] = []
    real = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), real(fig, *a, **k))
    )
    run_dir = tmp_path / "run"
    shutil.copytree(val_run, run_dir)
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert final_plots(run_dir, config, summary) == {"plots/curves": run_dir / "curves.png"}
    (fig,) = drawn
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    val = [r["val/top1"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert list(lines["student top-1 (val split)"].get_ydata()) == val
