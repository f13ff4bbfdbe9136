"""The self-distillation methods as sdrun runs them (sdrun/methods/ls.py, tfkd.py, ...): each
plug-in's loss against its paper's formula written out here, a short CPU run on learnable data
that ends well above chance with a validation split, a run on fake data, and the report row.
(The loss functions themselves: tests/test_selfkd_math.py.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from dist_workers import spawn, train_each
from folder_helpers import write_image_folder
from helpers import read_jsonl, tiny_config, train, write_tiny_cifar
from report_builder import write_run
from torch import nn

from sdrun.batches import Batch
from sdrun.config import DatasetConfig, ModelConfig, ScheduleConfig, validate
from sdrun.errors import ConfigError
from sdrun.methods import MethodSettings, build_method, default_settings, method_label
from sdrun.report import build_report, gain_record
from sdrun.report.identity import settings_read

K = 5  # classes of the formula tests


def conf_distill(name: str) -> MethodSettings:
    """The method's settings as `distill=<name>` composes them: its declared defaults."""
    return default_settings(name)


def fixed_student(logits: torch.Tensor) -> nn.Module:
    """A 'student' whose output for input row i is logits[i] plus a trainable zero."""

    class Student(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(logits.shape[1]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits[x.long()] + self.bias

    return Student()


def softmax_row(row: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


@pytest.fixture
def small() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, K, generator=g) * 2
    return torch.arange(4), logits, torch.tensor([0, 3, 1, 3])


def test_ls_plugin_is_ce_against_smoothed_labels(small):
    x, logits, y = small
    method = build_method(conf_distill("ls"))
    out = method.forward_train(fixed_student(logits), Batch(x, y), None)
    eps = 0.1
    expected = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        p = softmax_row(row)
        q = [(1 - eps) * (k == label) + eps / K for k in range(K)]
        expected -= sum(qk * math.log(pk) for qk, pk in zip(q, p)) / len(y)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert set(out.terms) == {"ce"}


def test_tfkd_plugin_is_the_official_virtual_teacher_loss(small):
    x, logits, y = small
    cfg = conf_distill("tfkd")
    assert (cfg.alpha, cfg.temperature, cfg.multiplier, cfg.correct_prob) == (0.1, 20, 100, 0.99)
    out = build_method(cfg).forward_train(fixed_student(logits), Batch(x, y), None)
    ce = kl = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        p = softmax_row(row)
        pd = [0.99 if k == label else 0.01 / (K - 1) for k in range(K)]
        teacher = softmax_row(pd, t=20.0)  # softmax of the probabilities / T, as the code does
        ce -= math.log(p[label])
        kl += sum(t * math.log(t / pk) for t, pk in zip(teacher, p))
    b = len(y)
    expected = 0.9 * ce / b + 0.1 * 100 * kl / (b * K)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.terms["kd"].item() == pytest.approx(100 * kl / (b * K), rel=1e-5)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [("ls", "eps", 1.5), ("tfkd", "alpha", -0.1), ("pskd", "alpha_T", 2.0)],
)
def test_out_of_range_weights_are_refused_in_one_line(
    tmp_path: Path, name: str, key: str, value: float
):
    distill = conf_distill(name)
    setattr(distill, key, value)
    with pytest.raises(ConfigError, match=f"distill.{key}={value} must be in"):
        validate(tiny_config(tmp_path, distill=distill))


@pytest.fixture(scope="module")
def learnable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIFAR-10 (10 classes of blocky colour patterns plus noise): learnable in seconds."""
    return write_tiny_cifar(tmp_path_factory.mktemp("cifar10"), "cifar10", 192, 96)


def cosine(epochs: int = 3) -> ScheduleConfig:
    return ScheduleConfig(name="cosine", epochs=epochs, cycle_length=None, lr_min=0.001)


def short_run(root: Path, run_dir: Path, distill: MethodSettings, **dataset) -> list[dict]:
    """5 epochs of 5 steps of ResNet-20 on the learnable data, 32 images held out for
    validation (3 epochs leave plain CE itself near chance on this split)."""
    data = dict(name="cifar10", root=str(root), download=False, batch_size=32,
                eval_batch_size=96, val_split=32)  # fmt: skip
    data.update(dataset)
    cfg = tiny_config(root, dataset=DatasetConfig(**data), distill=distill,
                      schedule=cosine(5),
                      model=ModelConfig(name="resnet20"))  # fmt: skip
    cfg.trainer.deterministic = True
    train(cfg, run_dir)
    return read_jsonl(run_dir / "metrics.jsonl")


SELFKD = ["ls", "tfkd", "pskd", "cskd", "dlb", "byot"]
# Methods that ask the loaders for more than a batch (indices, partners) or train more than the
# student (byot's heads): also on image folders.
PER_SAMPLE = ["pskd", "cskd", "dlb", "byot"]


@pytest.mark.parametrize("name", SELFKD)
def test_trains_well_above_chance_with_a_validation_split(learnable: Path, tmp_path: Path, name):
    records = short_run(learnable, tmp_path / "run", conf_distill(name))
    last = records[-1]
    assert last["student/top1"] >= 25  # chance: 10 %
    assert last["val/top1"] is not None
    assert all(r["train/ce"] > 0 for r in records)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["complete"] is True


@pytest.mark.parametrize("name", SELFKD)
def test_runs_on_fake_data(tmp_path: Path, name: str):
    cfg = tiny_config(tmp_path, distill=conf_distill(name),
                      dataset=DatasetConfig(name="fake", num_classes=4, image_size=16,
                                            num_train=32, num_test=16, batch_size=16,
                                            eval_batch_size=16))  # fmt: skip
    train(cfg, tmp_path / "run")
    assert all(math.isfinite(r["train/loss"]) for r in read_jsonl(tmp_path / "run/metrics.jsonl"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("folders"), num_classes=3, n_train=8,
                              n_val=2)  # fmt: skip


@pytest.mark.parametrize("name", PER_SAMPLE)
def test_runs_on_an_image_folder_with_a_validation_split(folders: Path, tmp_path: Path, name):
    cfg = tiny_config(folders, distill=conf_distill(name), model=ModelConfig(name="resnet20"),
                      dataset=DatasetConfig(name="imagenet", root=str(folders), batch_size=6,
                                            eval_batch_size=6, image_size=16, eval_resize=16,
                                            num_workers=0, val_split=6))  # fmt: skip
    train(cfg, tmp_path / "run")
    records = read_jsonl(tmp_path / "run/metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["train/loss"]) for r in records)
    assert records[-1]["val/top1"] is not None


def test_each_method_is_its_own_report_row_keyed_on_what_it_reads():
    base = {"schedule.name": "cosine", "distill.temperature": 20.0, "distill.eps": 0.1,
            "distill.alpha": 0.1, "distill.multiplier": 100.0, "distill.correct_prob": 0.99,
            "distill.alpha_T": 0.8, "distill.kd_weight": 1.0}  # fmt: skip
    ls = settings_read({**base, "distill.name": "ls"}, {})
    assert {k for k in ls if k.startswith("distill.")} == {"distill.name", "distill.eps"}
    tfkd = settings_read({**base, "distill.name": "tfkd"}, {})
    assert {k for k in tfkd if k.startswith("distill.")} == {
        "distill.name", "distill.alpha", "distill.temperature", "distill.multiplier",
        "distill.correct_prob"}  # fmt: skip
    for name in ("cskd", "dlb"):  # their KL's temperature and weight, nothing else
        read = settings_read({**base, "distill.name": name}, {})
        assert {k for k in read if k.startswith("distill.")} == {
            "distill.name", "distill.temperature", "distill.kd_weight"}  # fmt: skip
    byot = settings_read({**base, "distill.feature_weight": 1e-4, "distill.name": "byot"}, {})
    assert {k for k in byot if k.startswith("distill.")} == {"distill.name", "distill.alpha",
                                                            "distill.temperature",
                                                            "distill.feature_weight"}  # fmt: skip
    assert method_label("ls", "cosine") == "ls" and method_label("tfkd", "step") == "tfkd-step"


def test_the_report_gives_each_method_its_row_and_sds_gain_over_it(tmp_path: Path):
    cosine = {"schedule.name": "cosine", "schedule.cycle_length": None}
    for seed in (0, 1):
        write_run(tmp_path / f"sd{seed}", "sd", seed, 72.0 + seed)
        write_run(tmp_path / f"cos{seed}", "cosine", seed, 70.0)
        for name in SELFKD:
            # eps is read by ls only: two runs of the others differing in it are one row
            config = {**cosine, "distill.name": name, "distill.eps": 0.1 + 0.1 * seed}
            write_run(tmp_path / f"{name}{seed}", "cosine", seed, 71.0, config=config)
    write_run(tmp_path / "ls_eps", "cosine", 0, 60.0,
              config={**cosine, "distill.name": "ls", "distill.eps": 0.3})  # fmt: skip
    report = build_report([tmp_path], tmp_path / "report")
    labels = sorted(row.label for row in report.rows)
    assert all(labels.count(name) == 1 for name in SELFKD[1:])
    # eps 0.1, 0.2, 0.3: what ls reads splits its rows, and names them
    assert [x for x in labels if x.startswith("ls")] == [f"ls (eps={e})" for e in (0.1, 0.2, 0.3)]
    gains = {g.baseline.label: gain_record(g) for g in report.gains}
    assert set(SELFKD[1:]) <= set(gains)  # SD's gain over each


def test_two_processes_agree_on_each_methods_state(cifar100_root: Path, tmp_path: Path):
    """Two gloo processes, as torchrun starts them, train each method with state or heads; each
    run fails at its end unless the weights and the method's state are identical on both
    (pskd's table and dlb's kept logits are gathered from both processes; byot's heads are
    inside the DDP module, their gradients all-reduced). The processes' shards and partners:
    tests/test_composition.py."""
    runs = {}
    for name in PER_SAMPLE:
        cfg = tiny_config(cifar100_root, distill=conf_distill(name), schedule=cosine(2),
                          dataset=DatasetConfig(root=str(cifar100_root), download=False,
                                                batch_size=32, eval_batch_size=32,
                                                limit_train=64, limit_test=32))  # fmt: skip
        runs[name] = (cfg, tmp_path / name)
    spawn(train_each, 2, runs)
    state = {name: torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["method"]
             for name, (_, run_dir) in runs.items()}  # fmt: skip
    table = state["pskd"]["latest"]  # a prediction for every image, not only rank 0's half
    assert table.shape == (64, 100) and torch.allclose(table.sum(dim=1), torch.ones(64))
    assert state["dlb"]["logits"].shape == (32, 100)  # both processes' 16 new images
    assert sorted(state["dlb"]["index"].tolist()) == sorted(set(state["dlb"]["index"].tolist()))
    assert len(state["byot"]) == 22  # the heads' tensors
    for name, (_, run_dir) in runs.items():
        assert json.loads((run_dir / "summary.json").read_text())["complete"] is True, name
