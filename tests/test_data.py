"""Data: CIFAR files read back as written, bad files fail naming the file, augmentation is
exactly crop-of-padded and flip, and the device loader is deterministic, complete and sharded."""

from __future__ import annotations

import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import write_tiny_cifar

from sdrun.batches import Batch
from sdrun.config import DatasetConfig
from sdrun.data import (
    DeviceLoader,
    ImageSet,
    build_data,
    hflip,
    load_cifar,
    make_fake,
    normalize,
    random_crop,
    write_cifar,
)
from sdrun.errors import ConfigError, DataError


def random_split(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return x, torch.randint(0, k, (n,), generator=g)


@pytest.fixture
def tiny100(tmp_path: Path) -> tuple[Path, tuple[torch.Tensor, ...]]:
    tx, ty = random_split(64, 100, seed=1)
    vx, vy = random_split(32, 100, seed=2)
    write_cifar(tmp_path, "cifar100", tx, ty, vx, vy, [f"c{i}" for i in range(100)])
    return tmp_path, (tx, ty, vx, vy)


# ----------------------------------------------------------------------------- CIFAR files


def test_cifar100_reads_back_what_was_written(tiny100):
    root, (tx, ty, vx, vy) = tiny100
    data = load_cifar(root, "cifar100", download=False)
    assert torch.equal(data.train_x, tx) and torch.equal(data.train_y, ty)
    assert torch.equal(data.test_x, vx) and torch.equal(data.test_y, vy)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert data.num_classes == 100 and data.class_names[:2] == ["c0", "c1"]
    assert data.mean == (0.5071, 0.4865, 0.4409) and data.std == (0.2673, 0.2564, 0.2762)


def test_files_have_the_official_format(tiny100):
    root, (tx, ty, _, _) = tiny100
    with open(root / "cifar-100-python" / "train", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (64, 3072)
    # Row-major CHW: the first 1024 values of a row are the red plane.
    assert np.array_equal(d[b"data"][0, :1024], tx[0, 0].flatten().numpy())
    assert d[b"fine_labels"] == ty.tolist()
    with open(root / "cifar-100-python" / "meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"fine_label_names"][3] == b"c3"


def test_build_data_reads_cifar_and_applies_limits(tiny100):
    root, (tx, ty, vx, vy) = tiny100
    cfg = DatasetConfig(name="cifar100", root=str(root), download=False)
    data = build_data(cfg, seed=0)
    assert torch.equal(data.train_x, tx) and torch.equal(data.test_y, vy)
    cfg.limit_train, cfg.limit_test = 10, 5
    small = build_data(cfg, seed=0)
    assert torch.equal(small.train_x, tx[:10]) and torch.equal(small.train_y, ty[:10])
    assert torch.equal(small.test_x, vx[:5]) and len(small.test_y) == 5


def test_build_data_expands_home(tiny100, monkeypatch):
    root, _ = tiny100
    monkeypatch.setenv("HOME", str(root.parent))
    cfg = DatasetConfig(name="cifar100", root=f"~/{root.name}", download=False)
    assert len(build_data(cfg, seed=0).train_x) == 64


def test_cifar10_layout(tmp_path):
    tx, ty = random_split(23, 10, seed=3)
    vx, vy = random_split(7, 10, seed=4)
    names = [f"n{i}" for i in range(10)]
    folder = write_cifar(tmp_path, "cifar10", tx, ty, vx, vy, names)
    expected = {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta"}
    assert {p.name for p in folder.iterdir()} == expected
    data = load_cifar(tmp_path, "cifar10", download=False)
    assert torch.equal(data.train_x, tx) and torch.equal(data.train_y, ty)
    assert torch.equal(data.test_x, vx) and torch.equal(data.test_y, vy)
    assert data.class_names == names and data.num_classes == 10
    assert data.mean == (0.4914, 0.4822, 0.4465)


def test_tiny_cifar_helper_has_every_class(tmp_path):
    root = write_tiny_cifar(tmp_path)
    data = build_data(DatasetConfig(root=str(root), download=False), seed=0)
    assert data.train_x.shape == (256, 3, 32, 32) and data.test_x.shape == (128, 3, 32, 32)
    assert set(data.train_y.tolist()) == set(range(100))


def test_missing_folder_says_how_to_fix(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar(tmp_path / "nowhere", "cifar100", download=False)
    msg = str(e.value)
    assert "dataset.download=true" in msg and "cifar-100-python" in msg and "\n" not in msg


def test_missing_file_is_named(tiny100):
    root, _ = tiny100
    (root / "cifar-100-python" / "test").unlink()
    with pytest.raises(DataError, match="lacks test"):
        load_cifar(root, "cifar100", download=False)


def test_root_pointing_inside_the_folder_suggests_its_parent(tiny100):
    root, _ = tiny100
    with pytest.raises(DataError, match=f"dataset.root={root}"):
        load_cifar(root / "cifar-100-python", "cifar100", download=False)


def test_truncated_pickle_names_the_file(tiny100):
    root, _ = tiny100
    path = root / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=str(path)) as e:
        load_cifar(root, "cifar100", download=False)
    assert "\n" not in str(e.value)


def rewrite(path: Path, **changes) -> None:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d.update({k.encode(): v for k, v in changes.items()})
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)


def test_labels_out_of_range_fail(tiny100):
    root, (_, ty, _, _) = tiny100
    path = root / "cifar-100-python" / "test"
    rewrite(path, fine_labels=[100] + [0] * 31)
    with pytest.raises(DataError, match=rf"{path}: labels must be in \[0, 100\)"):
        load_cifar(root, "cifar100", download=False)


def test_wrong_data_size_and_missing_key_fail(tiny100):
    root, _ = tiny100
    path = root / "cifar-100-python" / "train"
    rewrite(path, data=np.zeros((64, 3000), np.uint8))
    with pytest.raises(DataError, match=f"{path}: 'data' is uint8"):
        load_cifar(root, "cifar100", download=False)
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8)}, f)
    with pytest.raises(DataError, match="no 'fine_labels' entry"):
        load_cifar(root, "cifar100", download=False)


class Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_naming_other_code_are_refused(tiny100):
    root, _ = tiny100
    rewrite(root / "cifar-100-python" / "meta", extra=Boom())
    with pytest.raises(DataError, match="builtins.print"):
        load_cifar(root, "cifar100", download=False)


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official files: every string as a
    BINSTRING (bytes under encoding='bytes') and numpy globals under `numpy.core`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)


def test_python2_pickles_like_the_official_files_read(tiny100):
    root, (tx, ty, vx, vy) = tiny100
    for path in (root / "cifar-100-python").iterdir():
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        with open(path, "wb") as f:
            Py2Pickler(f, protocol=2).dump(d)
    assert b"numpy.core.multiarray\n_reconstruct" in (root / "cifar-100-python/train").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy's DeprecationWarning for numpy.core
        data = load_cifar(root, "cifar100", download=False)
    assert torch.equal(data.train_x, tx) and torch.equal(data.test_y, vy)
    assert data.class_names[5] == "c5"


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="dataset.name"):
        build_data(DatasetConfig(name="imagenet"), seed=0)


def test_fake_is_seeded():
    a, b = make_fake(20, 10, 7, 16, seed=3), make_fake(20, 10, 7, 16, seed=3)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape == (20, 3, 16, 16) and a.train_x.dtype == torch.uint8
    assert int(a.train_y.max()) < 7 and a.num_classes == 7 and len(a.class_names) == 7
    assert not torch.equal(a.train_x, make_fake(20, 10, 7, 16, seed=4).train_x)
    cfg = DatasetConfig(name="fake", num_train=30, num_test=6, limit_train=12)
    data = build_data(cfg, seed=0)
    assert (len(data.train_x), len(data.test_x)) == (12, 6)


# ----------------------------------------------------------------------------- augmentation


def test_random_crop_is_a_window_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (200, 3, 12, 10), generator=g, dtype=torch.uint8)
    shifts = torch.randint(0, 9, (200, 2), generator=g)
    out = random_crop(x, shifts, pad=4)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (4, 4, 4, 4))
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 12, dx : dx + 10])
    centre = torch.full((200, 2), 4)
    assert torch.equal(random_crop(x, centre, pad=4), x)


def test_hflip_flips_where_asked_and_twice_is_identity():
    x = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    mask = torch.tensor([True, False, True, False, False, True])
    out = hflip(x, mask)
    for i in range(6):
        assert torch.equal(out[i], x[i].flip(-1) if mask[i] else x[i])
    assert torch.equal(hflip(out, mask), x)


def test_normalize_matches_hand_computation():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    mean, std = (0.5, 0.2, 0.1), (0.25, 0.5, 2.0)
    out = normalize(x, mean, std)
    expected = torch.tensor([(0 - 0.5) / 0.25, (0.2 - 0.2) / 0.5, (1.0 - 0.1) / 2.0])
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    assert torch.allclose(out[1, :, 1, 0], expected, atol=1e-6)
    assert normalize(x, mean, std, torch.bfloat16).dtype == torch.bfloat16


def plan_of(loader: DeviceLoader, epoch: int):
    return loader._plan(epoch)


def test_loader_draws_cover_full_range_and_flip_half():
    x = torch.zeros(2000, 3, 4, 4, dtype=torch.uint8)
    loader = DeviceLoader(x, torch.zeros(2000), 100, (0, 0, 0), (1, 1, 1), train=True)
    _, shifts, flips = plan_of(loader, 0)
    assert set(shifts[:, 0].tolist()) == set(range(9)) == set(shifts[:, 1].tolist())
    assert 0.45 < flips.float().mean().item() < 0.55


# ----------------------------------------------------------------------------- loader


def coded(n: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant images whose pixels spell their index (red = i % 256, green = i // 256 + 1);
    labels are the index too, so every batch shows which image it holds and its pairing."""
    i = torch.arange(n)
    x = torch.stack([i % 256, i // 256 + 1, torch.full_like(i, 7)], 1)
    return x.to(torch.uint8)[:, :, None, None].expand(n, 3, size, size).contiguous(), i


def decode(batch: torch.Tensor) -> torch.Tensor:
    """Read the index back from the centre pixel, which a crop with pad < size/2 keeps."""
    h = batch.shape[-1] // 2
    px = (batch[:, :, h, h].float() * 255).round().long()
    return px[:, 0] + (px[:, 1] - 1) * 256


def train_loader(n: int, bs: int, **kw) -> DeviceLoader:
    x, y = coded(n)
    return DeviceLoader(x, y, bs, (0, 0, 0), (1, 1, 1), train=True, pad=2, **kw)


def run_epoch(loader: DeviceLoader, epoch: int = 0) -> list[Batch]:
    return list(loader.epoch(epoch))


def test_train_loader_is_a_deterministic_pairing_preserving_permutation():
    loader = train_loader(300, 32)
    assert len(loader) == 9 and loader.num_samples == 288  # drop_last
    batches = run_epoch(loader, 5)
    assert len(batches) == 9
    for x, y, *_ in batches:
        assert x.shape == (32, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(decode(x), y)  # labels stay with their images
    seen = torch.cat([batch.labels for batch in batches])
    assert len(set(seen.tolist())) == 288  # no image twice
    again = run_epoch(train_loader(300, 32), 5)  # a fresh loader, as after a resume
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    other = torch.cat([batch.labels for batch in run_epoch(loader, 6)])
    assert not torch.equal(seen, other)
    assert not torch.equal(
        seen, torch.cat([batch.labels for batch in run_epoch(train_loader(300, 32, seed=1), 5)])
    )


def test_train_loader_augments():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    loader = DeviceLoader(x, torch.arange(64), 64, (0, 0, 0), (1, 1, 1), train=True)
    ((out, y, *_),) = run_epoch(loader)
    changed = [not torch.equal((out[i] * 255).round().to(torch.uint8), x[y[i]]) for i in range(64)]
    assert sum(changed) > 48  # nearly every image is shifted or flipped


def test_eval_loader_covers_everything_in_order_without_augmentation():
    x, y = coded(70)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.5, 0.5)
    loader = DeviceLoader(x, y, 32, mean, std, train=False)
    assert len(loader) == 3 and loader.num_samples == 70
    batches = run_epoch(loader)
    assert [len(b[1]) for b in batches] == [32, 32, 6]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert torch.allclose(torch.cat([b[0] for b in batches]), normalize(x, mean, std))
    assert torch.equal(run_epoch(loader, 3)[0][0], batches[0][0])


def test_two_ranks_get_disjoint_equal_shards():
    shards = [run_epoch(train_loader(101, 10, rank=r, world_size=2), 2) for r in (0, 1)]
    ids = [torch.cat([batch.labels for batch in s]) for s in shards]
    assert len(ids[0]) == len(ids[1]) == 50
    assert not set(ids[0].tolist()) & set(ids[1].tolist())
    x, y = coded(101)
    evals = [
        DeviceLoader(x, y, 16, (0,) * 3, (1,) * 3, train=False, rank=r, world_size=2)
        for r in (0, 1)
    ]
    got = [torch.cat([b.labels for b in run_epoch(e)]) for e in evals]
    assert sorted(torch.cat(got).tolist()) == list(range(101))


def test_channels_last_and_dtype():
    loader = train_loader(64, 16, dtype=torch.bfloat16, channels_last=True)
    x = next(iter(loader.epoch(0))).images
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)


def test_batch_larger_than_training_set():
    with pytest.raises(ConfigError) as e:
        train_loader(100, 128)
    assert str(e.value) == (
        "dataset.batch_size=128 is larger than the training set (100 images per rank); "
        "lower dataset.batch_size or raise dataset.limit_train"
    )


def test_imageset_limit_keeps_the_first():
    data = make_fake(10, 4, 3, 8, seed=0)
    small = data.limit(3, None)
    assert isinstance(small, ImageSet) and torch.equal(small.train_x, data.train_x[:3])
    assert torch.equal(small.test_x, data.test_x)
