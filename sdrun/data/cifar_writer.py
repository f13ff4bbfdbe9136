"""Write a CIFAR-10/100 folder in the official "python version" layout (what cifar.py reads):
small stand-ins for the real data, for tests and docs, since the real archives are large and
downloads are not always possible."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from sdrun.data.cifar import PIXELS, cifar_spec

ArrayLike = Union[torch.Tensor, np.ndarray]


def _as_images(x: ArrayLike, what: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != (3, 32, 32):
        raise ValueError(f"{what} must be uint8 (N, 3, 32, 32), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a).reshape(len(a), PIXELS)


def _as_labels(y: ArrayLike, n: int, what: str) -> list[int]:
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {a.shape}")
    return [int(v) for v in a]  # the official files hold a list of Python ints


def _dump(path: Path, obj: dict[bytes, Any]) -> None:
    # Bytes keys and values, as Python 2 strings load with encoding='bytes'. Protocol 4
    # keeps bytes native; protocol 2 from Python 3 would route them through _codecs.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _batch(
    label_key: bytes, batch_label: str, x: np.ndarray, y: list[int], start: int
) -> dict[bytes, Any]:
    return {
        b"batch_label": batch_label.encode(),
        label_key: y,
        b"data": x,
        b"filenames": [f"image_{start + i:05d}.png".encode() for i in range(len(y))],
    }


def write_cifar(
    root: Path,
    name: str,
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    class_names: list[str],
) -> Path:
    """Write a CIFAR-10/100 folder in the official layout under `root`; returns that folder.

    For tests and docs: small stand-ins for the real data. Images are uint8 (N, 3, 32, 32)
    tensors or arrays. Labels are written as given, unchecked, so a test can write a bad
    file. CIFAR-100's coarse labels are not written; nothing here reads them.
    """
    spec = cifar_spec(name)
    tx, ty = _as_images(train_x, "train_x"), _as_labels(train_y, len(train_x), "train_y")
    vx, vy = _as_images(test_x, "test_x"), _as_labels(test_y, len(test_x), "test_y")
    if len(class_names) != spec.num_classes:
        raise ValueError(
            f"{spec.title} needs {spec.num_classes} class names, got {len(class_names)}"
        )
    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)

    parts = np.array_split(np.arange(len(tx)), len(spec.train_files))
    for i, (file, idx) in enumerate(zip(spec.train_files, parts), start=1):
        start = int(idx[0]) if len(idx) else 0
        label = f"training batch {i} of {len(spec.train_files)}"
        sel_y = [ty[j] for j in idx]
        _dump(folder / file, _batch(spec.label_key, label, tx[idx], sel_y, start))
    _dump(folder / spec.test_file, _batch(spec.label_key, "testing batch 1 of 1", vx, vy, 0))

    meta: dict[bytes, Any] = {spec.names_key: [n.encode() for n in class_names]}
    if name == "cifar10":
        meta[b"num_cases_per_batch"] = len(parts[0])
        meta[b"num_vis"] = PIXELS
    _dump(folder / spec.meta_file, meta)
    return folder
