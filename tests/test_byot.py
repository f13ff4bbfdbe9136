"""byot (sdrun/methods/byot.py, byot_heads.py): the loss against the paper's formula from the
heads' own outputs; a head on each stage after the stem but the deepest; the heads trained
with the student (in its optimizer, the student's no-decay names kept) but left out of the
exported model and the parameter count, kept bitwise through a kill and a mid-epoch SIGTERM;
runs on an image folder and on fake data. (Two processes: tests/test_selfkd.py.)"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from folder_helpers import write_image_folder
from helpers import read_jsonl, tiny_config, train
from resume_helpers import Killed, assert_same_run, interrupt_at, kill, last, method_run
from test_selfkd import conf_distill, cosine, softmax_row
from torch import nn

from sdrun.batches import Batch
from sdrun.config import DatasetConfig, OptimConfig
from sdrun.errors import CheckpointError, ConfigError
from sdrun.methods import RunShape, build_method
from sdrun.methods.byot import BeYourOwnTeacher
from sdrun.models import build_model
from sdrun.runfolder.interrupt import RunStopped
from sdrun.training.optim import build_optimizer

K = 5  # classes of the formula test


def byot(num_classes: int, **weights: float) -> BeYourOwnTeacher:
    cfg = conf_distill("byot")
    for key, value in weights.items():
        setattr(cfg, key, value)
    method = build_method(cfg)
    method.prepare(RunShape(8, num_classes, 1, torch.device("cpu")))
    return method


def expected_loss(logits: list, features: list, labels: list[int], alpha: float, t: float,
                  lam: float) -> dict[str, float]:  # fmt: skip
    """The paper's loss written out: CE for the deepest classifier C; for each shallower i,
    (1 - alpha) CE + alpha T^2 KL(q_C^T || q_i^T) + lam ||F_i - F_C||^2, means over the batch."""
    b = len(labels)
    z_c, f_c = logits[-1], features[-1]
    ce = sum(-math.log(softmax_row(z_c[n])[labels[n]]) for n in range(b)) / b
    ce_aux = kd = feat = 0.0
    for z_i, f_i in zip(logits[:-1], features[:-1]):
        for n in range(b):
            ce_aux -= math.log(softmax_row(z_i[n])[labels[n]]) / b
            q, p = softmax_row(z_c[n], t), softmax_row(z_i[n], t)
            kd += t * t * sum(qk * math.log(qk / pk) for qk, pk in zip(q, p)) / b
            feat += sum((a - c) ** 2 for a, c in zip(f_i[n], f_c[n])) / b
    total = ce + (1 - alpha) * ce_aux + alpha * kd + lam * feat
    return {"loss": total, "ce": ce, "ce_aux": ce_aux, "kd": kd, "feat": feat}


def test_the_loss_is_the_papers_formula_over_the_heads_outputs():
    torch.manual_seed(0)
    model = build_model("resnet20", K)
    method = byot(K, alpha=0.3, temperature=2.0, feature_weight=0.01)
    trained = method.training_module(model)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 3, 1, 4])
    out = method.forward_train(trained, Batch(x, y), None)

    maps = {}  # each stage's output, read here with hooks of the test's own
    for name in ("layer1", "layer2", "layer3"):
        hook = lambda module, inputs, output, name=name: maps.update({name: output})  # noqa: E731
        getattr(model, name).register_forward_hook(hook)
    with torch.no_grad():  # train mode, as the step: BN normalises with the batch's statistics
        z_c = model(x)
        aux = [b(maps[s]) for b, s in zip(method.heads.branches, ("layer1", "layer2"))]
    logits = [z.tolist() for z, _ in aux] + [z_c.tolist()]
    features = [f.tolist() for _, f in aux] + [maps["layer3"].mean(dim=(2, 3)).tolist()]
    want = expected_loss(logits, features, y.tolist(), 0.3, 2.0, 0.01)
    assert out.loss.item() == pytest.approx(want["loss"], rel=1e-5)
    for term in ("ce", "ce_aux", "kd", "feat"):
        assert out.terms[term].item() == pytest.approx(want[term], rel=1e-5), term
    assert torch.equal(out.logits.detach(), z_c)  # train/top1 scores the deepest classifier


@pytest.mark.parametrize(
    ("name", "stage_channels", "deepest", "strides"),
    [("resnet20", [16, 32], 64, [4, 2]), ("densenet_bc100", [216, 300], 342, [4, 2])],
)
def test_a_head_on_each_stage_after_the_stem_but_the_deepest(name, stage_channels, deepest,
                                                             strides):  # fmt: skip
    method = byot(10)
    method.training_module(build_model(name, 10))
    branches = method.heads.branches
    assert [b.bottleneck[0].in_channels for b in branches] == stage_channels
    assert [b.bottleneck[3].stride for b in branches] == [(s, s) for s in strides]
    assert [b.bottleneck[6].out_channels for b in branches] == [deepest] * 2
    assert [(b.fc.in_features, b.fc.out_features) for b in branches] == [(deepest, 10)] * 2


@pytest.mark.parametrize(
    "model",
    [nn.Sequential(nn.Flatten(), nn.Linear(12, 10)), build_model("resnet20", 10)],
    ids=["no feature_info", "stem and deepest only"],
)
def test_a_model_without_stages_to_put_heads_on_is_refused_in_one_line(model: nn.Module):
    if hasattr(model, "feature_info"):
        model.feature_info = [model.feature_info[0], model.feature_info[-1]]
    with pytest.raises(ConfigError, match="distill=byot needs a model whose feature_info") as err:
        byot(10).training_module(model)
    assert "\n" not in str(err.value) and ("Sequential" in str(err.value)
                                           or "'resnet20'" in str(err.value))  # fmt: skip


def test_the_optimizer_decays_the_heads_and_keeps_the_students_no_decay_names():
    """timm's optimizer factory reads `no_weight_decay()` names of the module it is given: the
    student's names must still match inside the module with the heads."""
    model = build_model("resnet20", 10)
    model.no_weight_decay = lambda: {"fc.bias"}
    method = byot(10)
    optimizer = build_optimizer(method.training_module(model), OptimConfig(weight_decay=5e-4))
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups
             for p in group["params"]}  # fmt: skip
    assert decay[id(model.fc.bias)] == 0 and decay[id(model.fc.weight)] == 5e-4
    assert all(decay[id(p)] == 5e-4 for p in method.heads.parameters())
    assert len(decay) == len(list(model.parameters())) + len(list(method.heads.parameters()))


def test_saved_heads_of_another_shape_or_keys_are_refused_in_one_line():
    source = byot(10)
    source.training_module(build_model("resnet20", 10))
    method = byot(10)
    method.training_module(build_model("resnet20", 10))
    state = source.state_dict()
    before = [p for p in method.heads.parameters()]
    method.load_state_dict(state)  # the very parameters the optimizer holds, now the saved ones
    assert all(a is b for a, b in zip(before, method.heads.parameters()))
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in state.items())
    wrong = {**state, "heads.branches.0.fc.weight": torch.zeros(3, 64)}
    cases = [(wrong, r"heads.branches.0.fc.weight is \(3, 64\)"), ({}, "heads lack 'heads."),
             ({**state, "epoch": 3}, "heads hold 'epoch'")]  # fmt: skip
    for bad, match in cases:
        with pytest.raises(CheckpointError, match=f"byot's saved {match}") as err:
            method.load_state_dict(bad)
        assert "\n" not in str(err.value)


def byot_config(root: Path, **changes):
    """2 epochs of 2 steps: ResNet-20 on 64 images."""
    return method_run(root, "byot", 2, 64, **changes)


@pytest.fixture(scope="module")
def reference(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An uninterrupted run, and its heads' weights as they were built."""
    run_dir, built = tmp_path_factory.mktemp("byot") / "run", {}
    training_module = BeYourOwnTeacher.training_module

    def recorded(self, model):
        trained = training_module(self, model)
        built.update({k: v.clone() for k, v in self.state_dict().items()})
        return trained

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BeYourOwnTeacher, "training_module", recorded)
        train(byot_config(cifar100_root), run_dir)
    return run_dir, built


def test_the_heads_train_with_the_student_but_are_not_exported(reference):
    run_dir, built = reference
    saved, plain = last(run_dir), build_model("resnet20", 100)
    assert saved["model"].keys() == plain.state_dict().keys()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params"] == sum(p.numel() for p in plain.parameters())
    heads = saved["method"]
    assert heads.keys() == built.keys() and len(heads) == 22  # 2 branches: 3 conv, 3 BN, fc
    assert all(not torch.equal(v, built[k]) for k, v in heads.items()), "a head did not train"
    momenta = saved["optimizer"]["state"]
    assert len(momenta) == len(list(plain.parameters())) + len(heads)
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert all(r[f"train/{t}"] > 0 for r in records for t in ("ce", "ce_aux", "kd", "feat"))


def test_resume_after_a_kill_mid_epoch_is_bitwise(reference, cifar100_root: Path,
                                                  tmp_path: Path, monkeypatch):  # fmt: skip
    interrupt_at(monkeypatch, "byot", 4, kill)  # epoch 2's second step: last.pt is epoch 1's
    with pytest.raises(Killed):
        train(byot_config(cifar100_root), tmp_path / "run")
    monkeypatch.undo()
    assert last(tmp_path / "run")["epoch"] == 1
    train(byot_config(cifar100_root, resume=str(tmp_path / "run")), tmp_path / "run")
    assert_same_run(reference[0], tmp_path / "run")


def test_resume_after_a_mid_epoch_sigterm_is_bitwise(reference, cifar100_root: Path,
                                                     tmp_path: Path, monkeypatch):  # fmt: skip
    # a real signal, handled by the run's StopRequest
    interrupt_at(monkeypatch, "byot", 3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(RunStopped, match="in epoch 2 after step 1"):
        train(byot_config(cifar100_root), tmp_path / "run")
    monkeypatch.undo()
    train(byot_config(cifar100_root, resume=str(tmp_path / "run")), tmp_path / "run")
    assert_same_run(reference[0], tmp_path / "run")


@pytest.mark.parametrize("data", ["imagenet", "fake"])
def test_runs_on_an_image_folder_and_on_fake_data(tmp_path: Path, data: str):
    """Image-folder crops and fake images of odd sizes: the strided heads' maps need not be
    the deepest's size, their features are pooled."""
    if data == "imagenet":
        root = write_image_folder(tmp_path / "folder", num_classes=3, n_train=8, n_val=4)
        dataset = DatasetConfig(name="imagenet", root=str(root), download=False, batch_size=12,
                                eval_batch_size=12, image_size=24, eval_resize=28,
                                num_workers=0)  # fmt: skip
    else:
        dataset = DatasetConfig(name="fake", num_classes=4, image_size=18, num_train=32,
                                num_test=16, batch_size=16, eval_batch_size=16)  # fmt: skip
    cfg = tiny_config(tmp_path, distill=conf_distill("byot"), dataset=dataset, schedule=cosine(1))
    train(cfg, tmp_path / "run")
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert all(math.isfinite(r["train/loss"]) and r["train/kd"] >= 0 for r in records)
    assert len(last(tmp_path / "run")["method"]) == 22
