"""A tiny PASCAL VOC tree in the real formats, for smoke runs, tests and benchmarks.

`write_tiny_voc(root)` writes `root/VOCdevkit/VOC2007` (trainval, test) and
`root/VOCdevkit/VOC2012` (trainval for detection, train/val for segmentation): JPEG images,
XML annotations (1-based inclusive boxes, some objects `difficult`) and palette PNG class
masks with 255 borders, like the real ones. Image sizes vary (as VOC's do: a batch of whole
images needs padding, which evaluation must not depend on). Each image holds a few solid
rectangles, one colour per class, on a noisy background, so a net can learn something in a
few steps. Its numbers mean nothing.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from sdrun.transfer.voc import VOC_CLASSES

BORDER = 2  # VOC masks outline every object with 255 ("void"), a few pixels wide
COLOURS = [(37 * i % 256, 91 * i % 256, 151 * i % 256) for i in range(1, len(VOC_CLASSES) + 1)]


def _palette() -> list[int]:
    """VOC's colour map: class i gets a colour from its bits, 255 is light grey."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


Objects = list[tuple[str, list[int], bool]]  # class name, 1-based inclusive box, difficult


def _annotation(name: str, size: tuple[int, int], objects: Objects) -> str:
    w, h = size
    body = "".join(
        f"<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(diff)}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for cls, (x1, y1, x2, y2), diff in objects
    )
    return (
        f"<annotation><folder>VOC</folder><filename>{name}.jpg</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size><segmented>1</segmented>{body}</annotation>"
    )


def _image(rng: random.Random, size: tuple[int, int], classes: int):
    """An image, its objects (class, 1-based inclusive box, difficult) and its class mask."""
    w, h = size
    np_rng = np.random.default_rng(rng.randrange(2**32))
    pixels = np_rng.integers(90, 150, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    objects = []
    for k in range(rng.randint(1, 3)):
        label = rng.randrange(classes)
        bw, bh = rng.randint(w // 4, w // 2), rng.randint(h // 4, h // 2)
        x1, y1 = rng.randint(1, w - bw), rng.randint(1, h - bh)
        x2, y2 = x1 + bw - 1, y1 + bh - 1
        pixels[y1 - 1 : y2, x1 - 1 : x2] = COLOURS[label]
        mask[max(0, y1 - 1 - BORDER) : y2 + BORDER, max(0, x1 - 1 - BORDER) : x2 + BORDER] = 255
        mask[y1 - 1 : y2, x1 - 1 : x2] = label + 1
        objects.append((VOC_CLASSES[label], [x1, y1, x2, y2], k == 2))  # a third is difficult
    return pixels, objects, mask


def write_tiny_voc(root: Path, n_images: int = 8, size: tuple[int, int] = (80, 64),
                   classes: int = 4, seed: int = 0, vary: int = 16) -> Path:  # fmt: skip
    """Write `n_images` per split (and year), each `size` (width, height) less 0 to `vary`
    pixels per side in steps of 8; returns `root` (the folder holding VOCdevkit)."""
    rng = random.Random(seed)
    splits = {
        "2007": {"Main": {"trainval": n_images, "test": n_images}},
        "2012": {
            "Main": {"trainval": n_images},
            "Segmentation": {"train": n_images, "val": n_images},
        },
    }
    palette = _palette()
    for year, kinds in splits.items():
        base = Path(root) / "VOCdevkit" / f"VOC{year}"
        for folder in ("JPEGImages", "Annotations", "SegmentationClass"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        for kind, sets in kinds.items():
            (base / "ImageSets" / kind).mkdir(parents=True, exist_ok=True)
            for split, n in sets.items():
                names = [f"{year}_{kind[:3].lower()}{split}_{i:04d}" for i in range(n)]
                for name in names:
                    shrink = [8 * rng.randint(0, vary // 8) for _ in size]
                    own = (size[0] - shrink[0], size[1] - shrink[1])
                    pixels, objects, mask = _image(rng, own, classes)
                    Image.fromarray(pixels).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
                    xml = _annotation(name, own, objects)
                    (base / "Annotations" / f"{name}.xml").write_text(xml)
                    png = Image.fromarray(mask, mode="P")
                    png.putpalette(palette)
                    png.save(base / "SegmentationClass" / f"{name}.png")
                (base / "ImageSets" / kind / f"{split}.txt").write_text("\n".join(names) + "\n")
    return Path(root)


def write_tiny_sbd(root: Path, names: list[str], size: tuple[int, int] = (80, 64),
                   classes: int = 4, seed: int = 1) -> Path:  # fmt: skip
    """SBD's layout as torchvision's SBDataset reads it, under `root/SBD`: img/<name>.jpg,
    cls/<name>.mat (a GTcls struct whose Segmentation is the class mask, no 255 borders) and
    train_noval.txt listing `names`. Needs scipy (SBD's masks are MATLAB files)."""
    from scipy.io import savemat

    rng = random.Random(seed)
    base = Path(root) / "SBD"
    (base / "img").mkdir(parents=True, exist_ok=True)
    (base / "cls").mkdir(exist_ok=True)
    for name in names:
        pixels, _, mask = _image(rng, size, classes)
        Image.fromarray(pixels).save(base / "img" / f"{name}.jpg", quality=95)
        mask[mask == 255] = 0  # SBD marks no borders
        savemat(base / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": mask}})
    (base / "train_noval.txt").write_text("\n".join(names) + "\n")
    return Path(root)
