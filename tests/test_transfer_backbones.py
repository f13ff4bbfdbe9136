"""What a backbone checkpoint is labelled and normalised with: finished runs by their method,
cycle checkpoints by their cycle and teacher, unfinished runs only when asked (no training:
the session's finished tiny SD run, 2 cycles of 2 epochs, and files made from it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sdrun.data.fake import FAKE_MEAN, FAKE_STD
from sdrun.errors import CheckpointError, ConfigError
from sdrun.transfer.backbone import create_features, normalization, open_backbone


def checkpoint(sd_run: Path, name: str) -> dict:
    return torch.load(sd_run / "checkpoints" / name, weights_only=True)


def a_run_with(sd_run: Path, tmp_path: Path, payload: dict, name: str = "run") -> Path:
    """A run folder (the SD run's config) whose last.pt is `payload`."""
    run = tmp_path / name
    shutil.copytree(sd_run / ".hydra", run / ".hydra")
    (run / "checkpoints").mkdir()
    torch.save(payload, run / "checkpoints" / "last.pt")
    return run


def test_cycle_checkpoints_carry_their_cycle_and_whether_a_teacher_taught_them(sd_run: Path):
    # SD's first cycle has no teacher; the second has cycle 1's snapshot
    assert [checkpoint(sd_run, f"cycle{k}.pt")["taught"] for k in (1, 2)] == [False, True]
    first = open_backbone(str(sd_run / "checkpoints" / "cycle1.pt"))
    second = open_backbone(str(sd_run / "checkpoints" / "cycle2.pt"))
    final = open_backbone(str(sd_run))
    assert (first.method, second.method, final.method) == ("cyclic@cycle1", "sd@cycle2", "sd")
    s = first.summary()
    assert (s["backbone/cycle"], s["backbone/taught"], s["backbone/complete"]) == (1, False, False)
    s = final.summary()
    assert (s["backbone/epoch"], s["backbone/epochs"], s["backbone/complete"]) == (4, 4, True)


def test_cycle_checkpoints_of_an_older_sdrun_are_labelled_conservatively(
    sd_run: Path, tmp_path: Path
):
    """Without `taught`: SD's cycle 1 never has a teacher; a later cycle is not claimed."""
    for cycle in (1, 2):
        payload = checkpoint(sd_run, f"cycle{cycle}.pt")
        del payload["taught"]
        torch.save(payload, tmp_path / f"cycle{cycle}.pt")
    assert open_backbone(str(tmp_path / "cycle1.pt")).method == "cyclic@cycle1"
    older = open_backbone(str(tmp_path / "cycle2.pt"))
    assert older.method == "sd@cycle2-unverified" and older.summary()["backbone/taught"] is None


def test_a_run_that_did_not_finish_is_refused_unless_asked(sd_run: Path, tmp_path: Path):
    """prev.pt is the SD run after epoch 3 of 4 (a teacher since epoch 3): as a killed run."""
    stopped = a_run_with(sd_run, tmp_path, checkpoint(sd_run, "prev.pt"))
    with pytest.raises(CheckpointError) as refused:
        open_backbone(str(stopped))
    line = str(refused.value)
    assert "stopped after epoch 3 of 4" in line and "not a finished sd backbone" in line
    assert "backbone_allow_incomplete=true to fine-tune it as sd@epoch3" in line
    allowed = open_backbone(str(stopped), allow_incomplete=True)
    assert allowed.method == "sd@epoch3" and allowed.summary()["backbone/complete"] is False
    # stopped in epoch 2, in SD's first cycle: no teacher had taught it
    early = {**checkpoint(sd_run, "prev.pt"), "epoch": 1, "teacher": None}
    first = a_run_with(sd_run, tmp_path, early, "early")
    assert open_backbone(str(first), allow_incomplete=True).method == "cyclic@epoch1"


def test_a_backbone_trained_on_fake_data_keeps_its_normalisation(sd_run: Path, tmp_path: Path):
    payload = checkpoint(sd_run, "last.pt")
    payload["config"]["dataset"]["name"] = "fake"
    backbone = open_backbone(str(a_run_with(sd_run, tmp_path, payload)))
    features = create_features(backbone, None, None)
    assert normalization(backbone, features) == (FAKE_MEAN, FAKE_STD)


def test_a_plain_state_dict_loads_with_its_model_named(sd_run: Path, tmp_path: Path):
    """What the refusal of a pickled model advises saving: model.state_dict()."""
    weights = checkpoint(sd_run, "last.pt")["model"]
    plain = tmp_path / "weights.pt"
    torch.save(weights, plain)
    with pytest.raises(ConfigError, match="backbone_model=<timm name>"):
        open_backbone(str(plain))
    backbone = open_backbone(str(plain), model="resnet20")
    assert (backbone.kind, backbone.method) == ("state_dict", "state_dict")
    features = create_features(backbone, None, None)
    assert torch.equal(features.state_dict()["conv1.weight"], weights["conv1.weight"])
    with pytest.raises(ConfigError, match="drop backbone_model"):
        open_backbone(str(sd_run), model="resnet20")  # an sdrun run names its model itself
