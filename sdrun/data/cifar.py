"""CIFAR-10/100 in the official "python version" layout: read and download (cifar_writer.py
writes the same layout, for tests and docs).

The official files are Python 2 pickles of dicts with bytes keys; `b'data'` is a uint8
(N, 3072) array whose rows are one image in CHW order (1024 red, 1024 green, 1024 blue).
We read them ourselves, rather than through torchvision's datasets, to get the whole split
as one uint8 tensor, to check what we read, and to report a bad file in one line.
"""

from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdrun.data.base import ImageSet, Stats
from sdrun.errors import ConfigError, DataError
from sdrun.runfolder import distributed

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _Spec:
    title: str  # as users know it, for messages
    folder: str  # what the official archive unpacks to, under the root
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: Stats
    std: Stats
    torchvision_class: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


SPECS = {
    "cifar100": _Spec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        torchvision_class="CIFAR100",
    ),
    "cifar10": _Spec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        torchvision_class="CIFAR10",
    ),
}


def cifar_spec(name: str) -> _Spec:
    if name not in SPECS:
        raise ConfigError(
            f"dataset.name={name!r} is not a CIFAR dataset; pick one of {', '.join(SPECS)}"
        )
    return SPECS[name]


# ----------------------------------------------------------------------------- reading


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 (1.26 has it too, for loading pickles written by numpy 2)
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
    }
    # The official files (numpy 1, Python 2) name `numpy.core`; numpy 2 writes `numpy._core`.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtins only.

    A pickle can run any code it names; a CIFAR batch needs nothing beyond rebuilding an
    array, so a file that names anything else is refused rather than executed.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _CifarUnpickler._allowed is None:
            _CifarUnpickler._allowed = _numpy_reconstructors()
        try:
            return _CifarUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a CIFAR file never does"
            ) from None


def _refetch_hint(spec: _Spec, folder: Path) -> str:
    return f"delete {folder} and run with dataset.download=true to fetch {spec.title} again"


def _read_pickle(path: Path, spec: _Spec) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # unpickling a damaged file can raise almost anything
        detail = " ".join(str(e).split()) or "no detail"
        raise DataError(
            f"{path}: not a readable {spec.title} file, corrupt or truncated "
            f"({type(e).__name__}: {detail}); {_refetch_hint(spec, path.parent)}"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(
            f"{path}: holds a {type(obj).__name__}, not a {spec.title} dict; "
            f"{_refetch_hint(spec, path.parent)}"
        )
    # Pickles written by Python 3 with str keys are otherwise the same; accept them too.
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _entry(d: dict[bytes, Any], key: bytes, path: Path, spec: _Spec) -> Any:
    if key not in d:
        found = ", ".join(repr(k.decode(errors="replace")) for k in d if isinstance(k, bytes))
        raise DataError(
            f"{path}: no {key.decode()!r} entry (found {found or 'none'}), so it is not a "
            f"{spec.title} file; {_refetch_hint(spec, path.parent)}"
        )
    return d[key]


def _read_batch(path: Path, spec: _Spec) -> tuple[np.ndarray, np.ndarray]:
    """One data file -> uint8 (N, 3072) pixels and int64 (N,) labels, checked."""
    d = _read_pickle(path, spec)
    data = _entry(d, b"data", path, spec)
    raw_labels = _entry(d, spec.label_key, path, spec)
    hint = _refetch_hint(spec, path.parent)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == PIXELS
    ):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' is {what}, expected uint8 of shape (N, {PIXELS}); {hint}")
    labels = _integer_labels(raw_labels, path, hint)
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"{path}: {data.shape[0]} images but labels of shape {labels.shape}; {hint}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(
            f"{path}: labels must be in [0, {spec.num_classes}) for {spec.title}, "
            f"found {labels.min()}..{labels.max()}; {hint}"
        )
    return data, labels


def _integer_labels(raw: Any, path: Path, hint: str) -> np.ndarray:
    """The labels as int64, refusing anything that is not whole numbers: a cast would cut 3.7
    to 3 and read the string '3' as 3 without a word."""
    try:
        labels = np.asarray(raw)
    except (TypeError, ValueError) as e:  # ragged lists
        raise DataError(f"{path}: labels are not a list of integers ({e}); {hint}") from e
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels) & (labels == np.round(labels))):
        return labels.astype(np.int64)  # whole numbers stored as floats: nothing is lost
    if labels.dtype.kind not in "iu":
        bad = next((v for v in labels.reshape(-1) if not _whole(v)), labels.dtype)
        raise DataError(f"{path}: labels must be integers, found {bad!r}; {hint}")
    return labels.astype(np.int64)


def _whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _read_split(
    folder: Path, files: tuple[str, ...], spec: _Spec
) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [_read_batch(folder / f, spec) for f in files]
    data = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    # np.require copies only when needed: torch refuses to share a read-only buffer.
    x = torch.from_numpy(np.require(data, requirements=["C", "W"])).view(-1, 3, 32, 32)
    return x, torch.from_numpy(np.require(labels, requirements=["C", "W"]))


def _read_names(path: Path, spec: _Spec) -> list[str]:
    raw = _entry(_read_pickle(path, spec), spec.names_key, path, spec)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    if len(names) != spec.num_classes:
        raise DataError(
            f"{path}: {len(names)} class names, expected {spec.num_classes}; "
            f"{_refetch_hint(spec, path.parent)}"
        )
    return names


# ----------------------------------------------------------------------------- finding


def _missing(folder: Path, spec: _Spec) -> list[str]:
    return [f for f in spec.files if not (folder / f).is_file()]


def _missing_message(root: Path, spec: _Spec, missing: list[str]) -> str:
    folder = root / spec.folder
    expected = ", ".join(spec.files)
    if not folder.is_dir():
        where = f"no {spec.title} data at {folder} (expected {expected})"
    else:
        where = f"{spec.title} data at {folder} lacks {', '.join(missing)} (expected {expected})"
    fix = f"set dataset.download=true or point dataset.root at the folder that holds {spec.folder}"
    if (root / spec.files[0]).is_file():
        # The usual slip: root points at cifar-100-python itself rather than its parent.
        fix = f"set dataset.root={root.parent}, the folder that holds {spec.folder}"
    return f"dataset.root: {where}; {fix}"


def _download(root: Path, spec: _Spec) -> None:
    """Fetch and unpack the official archive with torchvision's download utility, from the
    URL and with the md5 sums its dataset class holds (archive and every file checked).

    Not through the dataset class itself: that would also unpickle the whole split with
    plain `pickle`, which sdrun never does with a downloaded file (see `_CifarUnpickler`).
    """
    import torchvision.datasets as tvd  # imported here: only needed on first use
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    source = getattr(tvd, spec.torchvision_class)
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(
            source.url, str(root), filename=source.filename, md5=source.tgz_md5
        )
        meta = (source.meta["filename"], source.meta["md5"])
        sums = [*source.train_list, *source.test_list, meta]
        bad = [name for name, md5 in sums if not check_integrity(root / spec.folder / name, md5)]
        if bad:
            raise RuntimeError(f"md5 mismatch in the unpacked {', '.join(bad)}")
    except Exception as e:  # network, disk, or checksum errors all mean the same to the user
        detail = " ".join(str(e).split()) or "no detail"
        raise DataError(
            f"dataset.download: could not download {spec.title} into {root} "
            f"({type(e).__name__}: {detail}); check the network, or unpack the official "
            f"archive into {root} yourself and set dataset.download=false"
        ) from e


def _download_missing(root: Path, spec: _Spec) -> None:
    if _missing(root / spec.folder, spec):
        _download(root, spec)


def load_cifar(root: Path, name: str, download: bool) -> ImageSet:
    """Read CIFAR-10/100 from `root`/<official folder>; download it first if asked and missing.

    With download=False the files are read as they are (no checksum: a hand-made or
    trimmed folder is fine); every file is still checked for shape and label range.
    """
    spec = cifar_spec(name)
    root = Path(root)
    folder = root / spec.folder
    if download:  # under torchrun one process per folder downloads while the others wait
        distributed.first_on_each_node(lambda: _download_missing(root, spec))
    missing = _missing(folder, spec)
    if missing:
        raise DataError(_missing_message(root, spec, missing))
    train_x, train_y = _read_split(folder, spec.train_files, spec)
    test_x, test_y = _read_split(folder, (spec.test_file,), spec)
    return ImageSet(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=spec.num_classes,
        class_names=_read_names(folder / spec.meta_file, spec),
        mean=spec.mean,
        std=spec.std,
    )
