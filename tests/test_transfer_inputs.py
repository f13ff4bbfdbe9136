"""Bad input to sdrun-transfer: each is one line on stderr naming what and how to fix it,
exit code 2, before any training (in this process: no start-up cost)."""

from __future__ import annotations

import pickle
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import timm
import torch
from timm.models import register_model
from torch import nn
from transfer_helpers import TINY, one_line, torch_threads, transfer

from sdrun.errors import DataError
from sdrun.transfer.backbone import create_features, open_backbone
from sdrun.transfer.voc import read_image, read_mask


class Featureless(nn.Module):
    """A classifier built without timm's builder: no feature_info, no features_only."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


if not timm.is_model("sdrun_test_featureless"):

    @register_model
    def sdrun_test_featureless(pretrained: bool = False, **kwargs) -> Featureless:
        return Featureless(**kwargs)


class RunsCode:
    """Unpickling this calls open(path, "w"): a file that appears means code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def error(monkeypatch, capsys, tmp_path: Path, *args: str) -> str:
    code = transfer(monkeypatch, *TINY, f"hydra.run.dir={tmp_path / 'run'}", *args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
    return one_line(err)


@pytest.fixture
def bad(monkeypatch, capsys, tmp_path, voc_root):
    return lambda *args: error(monkeypatch, capsys, tmp_path, f"dataset.root={voc_root}", *args)


def test_a_folder_without_a_checkpoint(bad, tmp_path: Path):
    folder = tmp_path / "not_a_run"
    (folder / ".hydra").mkdir(parents=True)
    line = bad(f"backbone={folder}")
    assert f"no checkpoint at {folder / 'checkpoints' / 'last.pt'}" in line


def test_a_path_that_does_not_exist(bad, tmp_path: Path):
    assert "no such file or directory" in bad(f"backbone={tmp_path / 'nowhere'}")


def test_a_backbone_is_required(bad):
    assert "backbone is not set" in bad()


def test_a_model_without_feature_maps(bad):
    line = bad("backbone=scratch:sdrun_test_featureless")
    assert "sdrun_test_featureless" in line and "feature maps" in line


def test_an_unknown_model(bad):
    assert "'resnet_nope' is not a timm model" in bad("backbone=scratch:resnet_nope")


def test_missing_voc_folders(monkeypatch, capsys, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = error(
        monkeypatch, capsys, tmp_path, "backbone=scratch:resnet20", f"dataset.root={empty}"
    )
    assert str(empty / "VOCdevkit" / "VOC2007") in line and "dataset.root" in line


def test_a_malformed_annotation(monkeypatch, capsys, tmp_path: Path, voc_root: Path):
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    base = root / "VOCdevkit" / "VOC2007"
    first = (base / "ImageSets" / "Main" / "trainval.txt").read_text().split()[0]
    xml = base / "Annotations" / f"{first}.xml"
    xml.write_text(xml.read_text()[:50])  # cut short
    line = error(monkeypatch, capsys, tmp_path, "backbone=scratch:resnet20", f"dataset.root={root}")
    assert f"malformed annotation {xml}" in line


def test_a_missing_image(monkeypatch, capsys, tmp_path: Path, voc_root: Path):
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    base = root / "VOCdevkit" / "VOC2012"
    first = (base / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    (base / "JPEGImages" / f"{first}.jpg").unlink()
    line = error(monkeypatch, capsys, tmp_path, "task=segmentation", "backbone=scratch:resnet20",
                 f"dataset.root={root}")  # fmt: skip
    assert f"{base / 'JPEGImages' / first}.jpg not found" in line


def test_a_pickle_that_would_run_code_is_refused_unopened(bad, tmp_path: Path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": RunsCode(marker), "config": {}}))
    line = bad(f"backbone={evil}")
    assert line.startswith(f"sdrun-transfer: error: backbone: refused {evil}")
    assert "could run code" in line
    assert not marker.exists()


def test_a_bad_value(bad):
    assert "dataset.image_size=0 must be > 0" in bad(
        "backbone=scratch:resnet20", "dataset.image_size=0"
    )


def test_a_non_finite_loss_stops_with_one_line_and_keeps_the_last_checkpoint(
    monkeypatch, capsys, tmp_path: Path, voc_root: Path
):
    monkeypatch.setenv("SDRUN_FAULT_NAN_STEP", "2")  # the first step of epoch 2
    run = tmp_path / "run"
    with torch_threads(1):  # a few steps of a tiny net: one thread is faster on a busy CPU
        code = transfer(monkeypatch, *TINY, "task=segmentation", "backbone=scratch:resnet20",
                        "dataset.image_size=32", f"dataset.root={voc_root}",
                        f"hydra.run.dir={run}")  # fmt: skip
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "diverged" in line and "epoch 2" in line
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_segmentation_needs_two_images_per_process(bad):
    line = bad("task=segmentation", "backbone=scratch:resnet20", "dataset.batch_size=1")
    assert "dataset.batch_size=1" in line and "trainer.sync_bn=true" in line


def test_timm_weights_that_cannot_be_fetched(bad, monkeypatch, tmp_path: Path):
    """Offline with an empty Hugging Face cache (as on a cluster node without network)."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    line = bad("backbone=timm:resnet18")
    assert "(timm/resnet18.a1_in1k) are not in the Hugging Face cache and HF_HUB_OFFLINE" in line
    assert str(tmp_path / "hf") in line and "backbone=scratch:resnet18" in line


def test_timm_weights_with_the_hub_unreachable_fail_at_once(bad, monkeypatch, capsys, tmp_path):
    """No network and HF_HUB_OFFLINE not set: one request to the hub, not huggingface_hub's
    retries with back-off for every file timm looks for (~50 s and dozens of warnings)."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # refused
    line = bad("backbone=timm:resnet18")
    assert "not in the Hugging Face cache and http://127.0.0.1:9 cannot be reached" in line


def test_timm_weights_in_the_cache_load_without_asking_the_hub(monkeypatch, caplog, tmp_path):
    """A cache holding the weights (laid out as huggingface_hub writes it) and no network: they
    load from the cache, with not one request."""
    import huggingface_hub
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    name = "resnet10t"  # small: 5M weights
    repo = get_pretrained_cfg(name).hf_hub_id
    cache = tmp_path / "hf"
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(0)
    weights = timm.create_model(name).state_dict()
    save_file(weights, str(folder / "snapshots" / commit / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    features = create_features(open_backbone(f"timm:{name}"), None, None)
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]  # hub not asked
    assert torch.equal(features.state_dict()["conv1.0.weight"], weights["conv1.0.weight"])
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # offline only while loading


def test_a_run_that_did_not_finish_is_refused_as_a_backbone(bad, sd_run: Path, tmp_path: Path):
    """The SD run's prev.pt (after epoch 3 of 4) as the last.pt of a killed run."""
    stopped = tmp_path / "stopped"
    shutil.copytree(sd_run / ".hydra", stopped / ".hydra")
    (stopped / "checkpoints").mkdir()
    shutil.copy(sd_run / "checkpoints" / "prev.pt", stopped / "checkpoints" / "last.pt")
    line = bad(f"backbone={stopped}")
    assert "stopped after epoch 3 of 4" in line and "backbone_allow_incomplete=true" in line


def test_a_transfer_run_is_not_a_backbone(bad, tmp_path: Path):
    finetuned = tmp_path / "finetuned.pt"
    config = {"task": {"name": "detection"}, "backbone": "outputs/sd_run", "seed": 0}
    torch.save({"model": {"w": torch.zeros(1)}, "config": config}, finetuned)
    line = bad(f"backbone={finetuned}")
    assert "is an sdrun-transfer run (fine-tuned for detection), not a pre-training run" in line
    assert "backbone=outputs/sd_run" in line


def test_a_data_error_during_training_is_in_the_runs_log(monkeypatch, capsys, tmp_path, voc_root):
    """A broken training image stops the run in its first epoch: the reason goes to stderr
    and into the run's sdrun.log, which otherwise would not say why the run ended."""
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    base = root / "VOCdevkit" / "VOC2007"
    for name in (base / "ImageSets" / "Main" / "trainval.txt").read_text().split():
        (base / "JPEGImages" / f"{name}.jpg").write_bytes(b"not a jpeg")
    run = tmp_path / "run"
    with torch_threads(1):
        code = transfer(monkeypatch, *TINY, "backbone=scratch:resnet20", "dataset.years=[2007]",
                        f"dataset.root={root}", f"hydra.run.dir={run}")  # fmt: skip
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "JPEGImages" in line
    assert line.split(": error: ", 1)[1] in (run / "sdrun.log").read_text()


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A palette PNG of a few hundred bytes whose header declares width x height pixels (its
    pixel data is cut short: only a decoder that trusts the header gets past it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit palette
    body = chunk(b"IHDR", header) + chunk(b"PLTE", bytes(768))
    body += chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# side -> what the line says (past PIL's limit, ~13.4k square, PIL refuses to open it at all)
TOO_LARGE = {12_000: "it declares 12000x12000, more than 4096 pixels per side",
             20_000: "it declares more than 4096 pixels per side"}  # fmt: skip


@pytest.mark.parametrize("side", TOO_LARGE, ids=["1GB-decoded", "past-PIL-limit"])
def test_voc_images_and_masks_larger_than_any_are_refused_from_their_header(tmp_path, side):
    """12000 x 12000 would be decoded (432 MB as RGB); 20000 x 20000 is past PIL's own limit,
    its DecompressionBombError a traceback. Both are one line naming the file, undecoded."""
    png = png_declaring(tmp_path / "2007_000032.png", side, side)
    for read in (read_image, lambda path: read_mask(path, (side, side))):
        with pytest.raises(DataError) as err:
            read(str(png))
        line = str(err.value)
        assert str(png) in line and "\n" not in line
        assert TOO_LARGE[side] in line
