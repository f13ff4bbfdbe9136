"""Image-folder data (`dataset=imagenet`): batches are decoded, cropped and normalized as
configured, the order depends on (seed, epoch) only, ranks get disjoint shards, limits keep
every class, and bad folders or files fail with one line naming the path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from folder_helpers import image_numbers, write_image_folder
from helpers import sdrun_here

from sdrun.batches import Batch
from sdrun.config import DatasetConfig
from sdrun.data import DataBundle, FolderLoader, build_loaders
from sdrun.data.folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    class_balanced_order,
    one_line,
    open_folders,
)
from sdrun.errors import ConfigError, DataError
from sdrun.training.engine import EpochTally
from sdrun.training.runner import _epoch_batches

N_TRAIN, N_VAL, CLASSES = 8, 4, 3  # per class


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imagefolder"), CLASSES, N_TRAIN, N_VAL)


def config(root: Path, **overrides) -> DatasetConfig:
    values = dict(
        name="imagenet", root=str(root), download=False, batch_size=8, eval_batch_size=8,
        image_size=32, eval_resize=36, num_workers=0,
    )  # fmt: skip
    return DatasetConfig(**{**values, **overrides})


def loaders(root: Path, *, seed: int = 0, channels_last: bool = False, **overrides) -> DataBundle:
    cfg = config(root, **overrides)
    return build_loaders(cfg, seed=seed, device=torch.device("cpu"), channels_last=channels_last)


def train_numbers(loader: FolderLoader, epoch: int) -> list[int]:
    return [n for x, *_ in loader.epoch(epoch) for n in image_numbers(x)]


def all_batches(loader: FolderLoader, epoch: int) -> list[Batch]:
    return list(loader.epoch(epoch))


# ----------------------------------------------------------------------------- batches


def test_an_epoch_leaves_the_global_rng_alone(folder_root: Path):
    """A resumed epoch starts its loader at another point of the global RNG stream than the
    uninterrupted run did: drawing from it would change what the model draws (dropout)."""
    data = loaders(folder_root)
    before = torch.get_rng_state()
    all_batches(data.train, 0)
    all_batches(data.test, 0)
    assert torch.equal(torch.get_rng_state(), before)


def test_batches_are_normalized_crops_with_int64_labels(folder_root: Path):
    data = loaders(folder_root, channels_last=True)
    assert data.num_classes == CLASSES
    assert len(data.train) == CLASSES * N_TRAIN // 8
    assert data.train.num_samples == CLASSES * N_TRAIN
    batches = all_batches(data.train, 1)
    assert len(batches) == len(data.train)
    for x, y, *_ in batches:
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(CLASSES))
        # undoing the normalization gives back whole uint8 pixel values
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        pixels = (x * std + mean) * 255
        assert torch.allclose(pixels, pixels.round(), atol=1e-3)
        assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
        # blue marks the class: the labels are the class folders' indices
        assert torch.equal((pixels[:, 2].mean(dim=(1, 2)) / 60).round().long(), y)
    numbers = train_numbers(data.train, 1)
    assert sorted(numbers) == list(range(CLASSES * N_TRAIN))  # each image once per epoch


def test_eval_is_every_val_image_in_order_centre_cropped(folder_root: Path):
    data = loaders(folder_root, channels_last=False)
    assert len(data.test) == 2 and data.test.num_samples == CLASSES * N_VAL
    batches = all_batches(data.test, 0)
    xs, ys = [b.images for b in batches], [b.labels for b in batches]
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (CLASSES * N_VAL, 3, 32, 32) and x.is_contiguous()
    assert y.tolist() == [k for k in range(CLASSES) for _ in range(N_VAL)]
    # Resize(36) then CenterCrop(32) of a 40-wide left-to-right ramp: symmetric about the centre
    green = x[:, 1] * IMAGENET_STD[1] + IMAGENET_MEAN[1]
    mid = green.mean(dim=(0, 1))
    assert mid[0] < mid[-1] and abs(float(mid[0] + mid[-1]) / 2 - float(mid.mean())) < 0.03
    # eval is the same every time
    assert torch.equal(x, torch.cat([b.images for b in all_batches(data.test, 5)]))


def test_order_and_crops_depend_on_seed_and_epoch_only(folder_root: Path):
    a, b = loaders(folder_root).train, loaders(folder_root).train
    for (xa, ya, *_), (xb, yb, *_) in zip(all_batches(a, 3), all_batches(b, 3), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert train_numbers(a, 1) != train_numbers(a, 2)
    assert train_numbers(a, 1) == train_numbers(b, 1)  # epoch 2 in between changed nothing
    assert train_numbers(loaders(folder_root, seed=1).train, 1) != train_numbers(a, 1)


def test_batches_do_not_depend_on_the_number_of_workers(folder_root: Path):
    inline = loaders(folder_root, num_workers=0).train
    worker = loaders(folder_root, num_workers=1).train
    for (xa, ya, *_), (xb, yb, *_) in zip(
        all_batches(inline, 4), all_batches(worker, 4), strict=True
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_two_ranks_get_disjoint_train_shards(folder_root: Path):
    cfg = config(folder_root, batch_size=8)  # the global batch: 4 per rank
    shards = []
    for rank in range(2):
        data = build_loaders(
            cfg, seed=0, device=torch.device("cpu"), channels_last=False, rank=rank, world_size=2
        )
        assert len(data.train) == 3 and data.train.num_samples == 12
        shards.append(set(train_numbers(data.train, 1)))
    assert len(shards[0]) == len(shards[1]) == 12
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(CLASSES * N_TRAIN))


class CountingReads(torch.utils.data.Dataset):
    """A dataset that counts the samples read (decoded) from it."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset, self.reads = dataset, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.dataset[index]


@pytest.mark.parametrize("world_size,num_workers", [(1, 0), (2, 0), (1, 1)])
def test_a_resumed_epoch_skips_trained_batches_without_reading_them(
    folder_root: Path, world_size: int, num_workers: int
):
    splits = open_folders(folder_root, image_size=32, eval_resize=36)
    for rank in range(world_size):
        train = CountingReads(splits.train)  # 24 images: 6 batches of 4, or 3 per rank of 2
        loader = FolderLoader(train, 4, train=True, rank=rank, world_size=world_size,
                              num_workers=num_workers)  # fmt: skip
        full = all_batches(loader, 3)
        done = len(full) - 2
        train.reads = 0
        # the runner's path for a resumed mid-epoch checkpoint
        parts = SimpleNamespace(train_loader=loader)
        resumed = list(_epoch_batches(parts, 3, EpochTally(batches=done)))
        if num_workers == 0:  # a worker process counts in its own copy
            assert train.reads == 2 * loader.batch_size  # only the two batches left were read
        assert len(resumed) == 2
        for (xa, ya, *_), (xb, yb, *_) in zip(full[done:], resumed):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert len(all_batches(loader, 4)) == len(full)  # the next epoch is whole again


def test_a_resumed_epoch_of_the_device_loader_is_the_rest_of_the_epoch():
    cfg = DatasetConfig(name="fake", num_train=64, num_test=8, num_classes=4, image_size=8,
                        batch_size=8)  # fmt: skip
    train = build_loaders(cfg, seed=3, device=torch.device("cpu"), channels_last=False).train
    full = all_batches(train, 2)
    resumed = list(_epoch_batches(SimpleNamespace(train_loader=train), 2, EpochTally(batches=5)))
    assert len(resumed) == len(full) - 5
    for (xa, ya, *_), (xb, yb, *_) in zip(full[5:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_limit_keeps_a_fixed_subset_with_every_class(folder_root: Path):
    data = loaders(folder_root, limit_train=6, limit_test=3, batch_size=3)
    assert data.train.num_samples == 6 and data.test.num_samples == 3
    kept = set(train_numbers(data.train, 1))
    assert len(kept) == 6
    assert {n // N_TRAIN for n in kept} == set(range(CLASSES))  # train image n is class n // 8
    assert set(train_numbers(data.train, 2)) == kept
    other_seed = loaders(folder_root, seed=7, limit_train=6, batch_size=3)
    assert set(train_numbers(other_seed.train, 1)) == kept
    labels = torch.cat([batch.labels for batch in data.test.epoch(0)])
    assert sorted(labels.tolist()) == [0, 1, 2]


def test_class_balanced_order_is_a_permutation_with_balanced_prefixes():
    targets = [0] * 5 + [1] * 2 + [2] * 9
    order = class_balanced_order(targets)
    assert sorted(order.tolist()) == list(range(len(targets)))
    assert sorted(targets[i] for i in order[:3].tolist()) == [0, 1, 2]
    assert sorted(targets[i] for i in order[:6].tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(order, class_balanced_order(targets))


# ----------------------------------------------------------------------------- errors


def one_line_error(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split_names_the_path_and_the_layout(folder_root: Path, tmp_path: Path, split):
    shutil.copytree(folder_root, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / split)
    with pytest.raises(DataError) as err:
        loaders(tmp_path)
    message = one_line_error(err)
    assert str(tmp_path / split) in message and "root/train/<class>/*.jpg" in message


@pytest.mark.parametrize("content", ["no class folders", "a class folder without images"])
def test_empty_split_names_the_path(folder_root: Path, tmp_path: Path, content: str):
    shutil.copytree(folder_root / "val", tmp_path / "val")
    (tmp_path / "train").mkdir()
    if content == "a class folder without images":
        (tmp_path / "train" / "class_0").mkdir()
        (tmp_path / "train" / "class_0" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as err:
        loaders(tmp_path)
    assert str(tmp_path / "train") in one_line_error(err)


def test_different_class_folders_name_both_splits(folder_root: Path, tmp_path: Path):
    shutil.copytree(folder_root, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "val" / "class_2")
    with pytest.raises(DataError) as err:
        loaders(tmp_path)
    message = one_line_error(err)
    assert str(tmp_path / "train") in message and str(tmp_path / "val") in message
    assert "class_2" in message


def test_batch_larger_than_the_train_split_names_the_key(folder_root: Path):
    with pytest.raises(ConfigError) as err:
        loaders(folder_root, batch_size=CLASSES * N_TRAIN + 1)
    assert "dataset.batch_size" in one_line_error(err)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_undecodable_file_names_the_file(folder_root: Path, tmp_path: Path, num_workers: int):
    shutil.copytree(folder_root, tmp_path, dirs_exist_ok=True)
    good = (tmp_path / "val" / "class_1" / "img_00.jpg").read_bytes()
    bad = tmp_path / "train" / "class_1" / "truncated.jpg"
    bad.write_bytes(good[: len(good) // 2])
    # batch 5 divides the 25 train images: no batch is dropped, the bad file is read
    data = loaders(tmp_path, batch_size=5, num_workers=num_workers)
    with pytest.raises(DataError) as err:
        all_batches(data.train, 1)
    message = one_line_error(err)
    assert message.startswith(f"cannot read image {bad}")


def test_one_line_recovers_the_message_of_a_worker_error():
    folded = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\nsdrun.errors.DataError: cannot read image '
        "/d/a.jpg: truncated; delete or replace the file\n"
    )
    assert one_line(folded) == "cannot read image /d/a.jpg: truncated; delete or replace the file"
    assert one_line(DataError("plain")) == "plain"


def test_open_folders_counts_classes_from_the_folders(folder_root: Path):
    splits = open_folders(folder_root, image_size=16, eval_resize=20, limit_train=4)
    assert splits.num_classes == CLASSES
    assert len(splits.train) == 4 and len(splits.val) == CLASSES * N_VAL
    image, label = splits.val[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and label == 0


# ----------------------------------------------------------------------------- CLI


def test_cli_trains_on_an_image_folder(folder_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = sdrun_here(
        "dataset=imagenet", f"dataset.root={folder_root}", "dataset.image_size=32",
        "dataset.eval_resize=36", "dataset.num_workers=0", "dataset.batch_size=8",
        "dataset.eval_batch_size=8", "model=resnet20", "schedule.epochs=2",
        "schedule.cycle_length=1", "logger=none", "trainer.deterministic=true",
        f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["teacher/top1"] is not None  # cycle 2 had the cycle-1 snapshot
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is True and summary["dataset"] == "imagenet"


def test_cli_missing_folder_fails_with_one_line(tmp_path: Path):
    missing = tmp_path / "nowhere"
    proc = sdrun_here(
        "dataset=imagenet", f"dataset.root={missing}", "model=resnet20", "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sdrun: error: ")
    assert str(missing / "train") in lines[0] and "dataset.root" in lines[0]
