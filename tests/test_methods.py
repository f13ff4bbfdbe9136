"""Training methods as plug-ins (sdrun/methods/): what a method declares is what the run, the
checkpoint and the report use, for a method registered from outside the package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import read_jsonl, tiny_config, train

from sdrun.config import DistillConfig, validate
from sdrun.errors import ConfigError
from sdrun.methods import Method, MethodOutput, method_names, register_method, registry
from sdrun.report.identity import settings_read


class Counting(Method):
    """CE plus a logged term of its own, counting its steps (state kept in checkpoints)."""

    terms = ("ce", "mean_logit")
    reads = ("distill.temperature",)
    loaded: list[dict] = []

    def __init__(self, cfg: DistillConfig) -> None:
        super().__init__(cfg)
        self.steps = 0

    def forward_train(self, student, batch, teacher) -> MethodOutput:
        x, y = batch.images, batch.labels
        logits = student(x)
        ce = F.cross_entropy(logits.float(), y)
        self.steps += 1
        terms = {"ce": ce.detach(), "mean_logit": logits.detach().float().mean()}
        return MethodOutput(ce, logits, y, terms)

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        Counting.loaded.append(state)
        self.steps = state["steps"]


@pytest.fixture
def counting() -> Iterator[type[Counting]]:
    register_method("counting_test")(Counting)
    Counting.loaded = []
    yield Counting
    registry._METHODS.pop("counting_test")


def test_the_shipped_methods_are_registered_and_an_unknown_one_is_refused(tmp_path: Path):
    assert {"sd", "kd", "none"} <= set(method_names())
    cfg = tiny_config(tmp_path, distill=DistillConfig(name="nope"))
    with pytest.raises(ConfigError, match=r"distill.name='nope' is not one of (\w+, )*sd, "):
        validate(cfg)


def test_a_plugin_trains_logs_its_terms_and_keeps_its_state(
    counting, cifar100_root: Path, tmp_path: Path
):
    run_dir = tmp_path / "run"
    train(tiny_config(cifar100_root, distill=DistillConfig(name="counting_test")), run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert all(r["train/mean_logit"] is not None and r["train/ce"] > 0 for r in records)
    assert "train/kd" not in records[0]  # the columns are the method's
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["method"] == {"steps": 2}  # 2 epochs of one step
    resumed = tiny_config(cifar100_root, distill=DistillConfig(name="counting_test"))
    resumed.resume = str(run_dir)
    train(resumed, run_dir)
    assert counting.loaded == [{"steps": 2}]


def test_the_report_compares_exactly_the_keys_a_method_reads(counting):
    config = {"distill.name": "counting_test", "distill.temperature": 3.0,
              "distill.kd_weight": 0.5, "schedule.name": "cosine"}  # fmt: skip
    read = settings_read(config, {})
    assert read["distill.temperature"] == 3.0 and "distill.kd_weight" not in read
    none = settings_read({**config, "distill.name": "none"}, {})
    assert not any(k.startswith("distill.") and k != "distill.name" for k in none)
