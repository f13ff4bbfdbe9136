"""The snapshot ensemble's accuracy, checked against a hand computation."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sdrun.batches import Batch
from sdrun.runfolder.runtime import Runtime
from sdrun.training.engine import predict
from sdrun.training.ensemble import cycle_snapshots, snapshot_ensemble

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)

# Logits of two cycle-end snapshots on four test samples (3 classes); labels below.
# Sample 0: A sure and right, B a little wrong  -> ensemble right.
# Sample 1: A a little wrong, B sure and right  -> ensemble right.
# Sample 2: averaging *logits* would pick class 1, averaging *softmax* picks class 0 (right).
# Sample 3: both wrong.
LOGITS_A = [[5.0, 0.0, 0.0], [0.0, 0.3, 0.0], [10.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
LOGITS_B = [[0.0, 0.4, 0.0], [0.0, 0.0, 6.0], [-10.0, 3.0, 2.9], [0.0, 0.0, 2.0]]
LABELS = [0, 2, 0, 0]


def hand_top1(members: list[list[list[float]]], labels: list[int]) -> float:
    correct = 0
    for i, label in enumerate(labels):
        probs = [0.0, 0.0, 0.0]
        for logits in members:
            z = [math.exp(v) for v in logits[i]]
            probs = [p + e / sum(z) / len(members) for p, e in zip(probs, z)]
        correct += max(range(3), key=probs.__getitem__) == label
    return 100.0 * correct / len(labels)


def logit_table(logits: list[list[float]]) -> nn.Linear:
    """A linear model whose output on one-hot input e_i is row i of `logits`."""
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(logits).T)
    return layer


def save_snapshot(run_dir: Path, cycle: int, model: nn.Module) -> Path:
    path = run_dir / "checkpoints" / f"cycle{cycle}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "epoch": cycle, "cycle": cycle, "config": {}}, path)
    return path


def predict_all(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.eye(4), torch.tensor(LABELS)
    batches = [Batch(x[:3], y[:3]), Batch(x[3:], y[3:])]  # two, as the runner's loader gives
    return predict(model, batches, CPU)


def test_ensemble_averages_softmax_outputs_as_by_hand(tmp_path: Path):
    paths = [
        save_snapshot(tmp_path, 1, logit_table(LOGITS_A)),
        save_snapshot(tmp_path, 2, logit_table(LOGITS_B)),
    ]
    model = logit_table([[0.0] * 3] * 4)
    before = model.weight.clone()
    result = snapshot_ensemble(model, paths, predict_all)
    assert hand_top1([LOGITS_A, LOGITS_B], LABELS) == 75.0
    mean_logits = (torch.tensor(LOGITS_A) + torch.tensor(LOGITS_B)) / 2
    assert hand_top1([mean_logits.tolist()], LABELS) == 50.0  # what averaging logits would give
    assert result["ensemble/top1"] == pytest.approx(75.0)
    assert result["ensemble/top5"] == pytest.approx(100.0)  # 3 classes: always in the top 5
    assert result["ensemble/members"] == 2
    # each member alone is worse than the ensemble (A: samples 0, 2; B: sample 1)
    assert snapshot_ensemble(model, paths[:1], predict_all)["ensemble/top1"] == 50.0
    assert snapshot_ensemble(model, paths[1:], predict_all)["ensemble/top1"] == 25.0
    assert torch.equal(model.weight, before)  # the caller's model keeps its own weights


def test_cycle_snapshots_are_in_cycle_order(tmp_path: Path):
    model = logit_table(LOGITS_A)
    for cycle in (10, 2, 1):
        save_snapshot(tmp_path, cycle, model)
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    (tmp_path / "checkpoints" / "cycle3.pt.tmp").write_bytes(b"")
    names = [p.name for p in cycle_snapshots(tmp_path)]
    assert names == ["cycle1.pt", "cycle2.pt", "cycle10.pt"]
    assert cycle_snapshots(tmp_path / "missing") == []


def test_no_snapshot_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        snapshot_ensemble(nn.Linear(4, 3), [], predict_all)
