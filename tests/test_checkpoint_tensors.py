"""The checks a checkpoint from elsewhere passes before anything uses it, on their own: tensors
from their metadata (trust/tensors.py), config types (trust/schema_types.py), progress against
the schedule and metrics.jsonl (runfolder/progress_checks.py). Every tensor goes through
torch.save and torch.load(weights_only=True), as a checkpoint's do. (The refusals through
`sdrun resume=` are in test_untrusted_checkpoints.py.)"""

from __future__ import annotations

import io
import math
from typing import Optional

import pytest
import torch
from torch import nn

from sdrun.config import Config
from sdrun.runfolder.progress_checks import metrics_problem, plan_problem, progress_problem
from sdrun.runfolder.run_state import Progress
from sdrun.transfer.config import TransferConfig
from sdrun.trust.schema_types import config_problem
from sdrun.trust.tensors import nonfinite, optimizer_problem, state_problem, tensor_problem


def loaded(t: torch.Tensor) -> torch.Tensor:
    """`t` as a checkpoint gives it back."""
    buffer = io.BytesIO()
    torch.save({"t": t}, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)["t"]


def test_the_tensors_sdrun_writes_are_fit_to_use():
    batch = torch.randn(64, 10)
    fit = {
        "contiguous": torch.randn(3, 4),
        "channels_last": torch.randn(16, 3, 3, 3).to(memory_format=torch.channels_last),
        "rows of a larger tensor": batch[32:],  # dlb keeps its batch's new rows: a view
        "a transposed weight": torch.randn(4, 5).t(),
        "a scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 100),
        "a parameter": nn.Parameter(torch.randn(2)),
        "size-1 dimensions": torch.randn(1, 5, 1),
    }
    for name, t in fit.items():
        assert tensor_problem(loaded(t)) is None, name
    assert loaded(batch[32:]).untyped_storage().nbytes() > 32 * 10 * 4  # the whole batch


UNFIT = {
    "sparse": (lambda: torch.eye(3).to_sparse(), "a sparse_coo tensor, not a dense one"),
    "quantized": (
        lambda: torch.quantize_per_tensor(torch.rand(3), 0.1, 0, torch.quint8),
        "a quantized tensor",
    ),  # fmt: skip
    "nested": (
        lambda: torch.nested.nested_tensor([torch.rand(2), torch.rand(3)]),
        "a nested tensor",
    ),  # fmt: skip
    "meta": (lambda: torch.zeros(50000, 100, device="meta"), "on the meta device"),
    "conjugated": (lambda: torch.rand(2, dtype=torch.complex64).conj(), "conjugated"),
    "stride 0": (
        lambda: torch.zeros(100).as_strided((4_000_000_000, 100), (0, 1)),
        "a 4000000000x100 float32 view with strides (0, 1)",
    ),  # fmt: skip
    "overlapping rows": (lambda: torch.zeros(4).as_strided((3, 2), (1, 1)), "strides (1, 1)"),
    "every other element": (lambda: torch.zeros(8)[::2], "strides (2)"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's, on making these kinds
@pytest.mark.parametrize("kind", UNFIT)
def test_tensors_sdrun_never_writes_are_named_from_their_metadata(kind: str):
    make, said = UNFIT[kind]
    problem = tensor_problem(loaded(make()))
    assert problem is not None and said in problem


def test_nonfinite_values_are_found_without_a_copy_of_the_tensor():
    weights = torch.randn(16, 3, 3, 3).to(memory_format=torch.channels_last)
    assert not nonfinite(weights) and not nonfinite(torch.arange(5))
    for bad in (math.nan, math.inf, -math.inf):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            t = weights.to(dtype)
            t[3, 1, 2, 0] = bad
            assert nonfinite(t), (bad, dtype)
    assert nonfinite(torch.tensor([1 + 1j, complex(0, math.nan)]))


def test_a_state_dict_is_compared_with_the_live_ones_keys_shapes_and_dtypes():
    live = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).state_dict()
    assert state_problem({k: loaded(v) for k, v in live.items()}, live, "model") is None
    renamed = {("x" if k == "0.weight" else k): v for k, v in live.items()}
    assert "'model' lacks '0.weight' and holds 'x' instead" in state_problem(renamed, live, "model")
    wider = {**live, "0.bias": torch.zeros(5)}
    assert (
        state_problem(wider, live, "model")
        == "'model.0.bias' is 5 float32, this run's is 4 float32"
    )
    counted = {**live, "1.num_batches_tracked": torch.tensor(0.0)}
    assert "scalar float32, this run's is scalar int64" in state_problem(counted, live, "model")
    extra = {**live, "later": torch.zeros(2)}
    assert state_problem(extra, live, "method", exact=False) is None  # dlb's logits appear later
    pskd = {"epoch": 0, "latest": torch.zeros(4, 3)}  # plain values keep their type
    said = state_problem({**pskd, "epoch": True}, pskd, "method")
    assert said == "'method.epoch' is of type bool, this run's is of type int"


def sgd_after_a_step(**kwargs) -> torch.optim.Optimizer:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, **kwargs)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return optimizer


def fresh_like(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer a resumed run builds: same parameters and settings, no step yet."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return type(optimizer)(params, **group)


def test_an_optimizer_state_is_compared_with_its_parameters():
    saved = sgd_after_a_step(weight_decay=5e-4)
    state = saved.state_dict()
    live = fresh_like(saved)
    assert optimizer_problem(state, live) is None
    adam = torch.optim.Adam(nn.Linear(3, 2).parameters())
    adam.param_groups[0]["params"][0].grad = torch.ones(2, 3)
    adam.step()  # Adam keeps a scalar step count beside its moments
    assert optimizer_problem(adam.state_dict(), fresh_like(adam)) is None

    def changed(edit) -> Optional[str]:
        copy = {"state": {k: dict(v) for k, v in state["state"].items()},
                "param_groups": [dict(g) for g in state["param_groups"]]}  # fmt: skip
        edit(copy)
        return optimizer_problem(copy, live)

    buffer = state["state"][0]["momentum_buffer"]
    transposed = changed(lambda s: s["state"][0].update(momentum_buffer=buffer.t().contiguous()))
    assert (
        transposed
        == "'optimizer.state.0.momentum_buffer' is 3x2 float32, its parameter is 2x3 float32"
    )
    assert "entry 7 for no parameter" in changed(lambda s: s["state"].update({7: {}}))
    assert "weight_decay' is 0.5, this run's is 0.0005" in changed(
        lambda s: s["param_groups"][0].update(weight_decay=0.5)
    )
    assert "lr' is nan" in changed(lambda s: s["param_groups"][0].update(lr=math.nan))
    assert "other parameters" in changed(lambda s: s["param_groups"][0].update(params=[1, 0]))


def test_epoch_and_step_must_be_a_point_of_the_schedule():
    def at(epoch: int, step: int, batches: Optional[int] = None) -> Optional[str]:
        tally = None if batches is None else {"batches": batches}
        return plan_problem({"epoch": epoch, "scheduler": {"step": step}, "epoch_tally": tally},
                            epochs=4, steps_per_epoch=8)  # fmt: skip

    assert at(0, 0) is None and at(4, 32) is None and at(2, 19, batches=3) is None
    assert "scheduler.step=5 but 4 epoch(s)" in at(4, 5)
    assert "epoch=5 is not a number of epochs done" in at(5, 40)
    assert "not a partial epoch of 8 steps" in at(2, 24, batches=8)
    assert "not a partial epoch" in at(4, 33, batches=1)  # the run is over: nothing partial


def test_a_stored_config_holds_its_schemas_types_exactly():
    saved = {"seed": 3, "optim": {"lr": 1}, "schedule": {"cycles": None},
             "model": {"kwargs": {"a": [1]}}, "from_an_older_sdrun": "x"}  # fmt: skip
    assert config_problem(Config, saved) is None  # an int is a float; unknown keys pass
    for bad, said in [
        ({"seed": True}, "seed=True is a bool, not an int"),
        ({"schedule": {"epochs": "240"}}, "schedule.epochs='240' is a str, not an int"),
        ({"schedule": {"epochs": 240.0}}, "schedule.epochs=240.0 is a float, not an int"),
        ({"schedule": {"milestones": [0.5, "x"]}}, "is a list, not a list[float]"),
        ({"logger": {"entity": 3}}, "logger.entity=3 is an int, not an optional str"),
        ({"trainer": [1]}, "trainer is a list, not a section"),
    ]:
        assert said in config_problem(Config, bad), bad
    assert "is a str, not an optional bool" in config_problem(
        TransferConfig, {"dataset": {"sbd": "no"}}
    )


def progress(**changes) -> dict:
    history = {"epoch": 2, "student/top1": 40.0, "student/top5": 70.0, "lr": 0.01}
    return {"epoch": 2, "best_top1": 45.0, "best_epoch": 1, "history": history, **changes}


def test_progress_is_what_a_run_of_the_schedule_records():
    config = {"schedule": {"epochs": 3}}

    def problem(**changes) -> Optional[str]:
        p = progress(**changes)
        return progress_problem({"epoch": p["epoch"], "progress": p}, Progress, config)

    assert problem() is None
    assert "best_top1=-1.0 at best_epoch=1" in problem(best_top1=-1.0)
    assert "best_epoch=3 is no epoch's accuracy of 2 done" in problem(best_epoch=3)
    assert "progress.train_seconds=-1.0 is negative" in problem(train_seconds=-1.0)
    assert "progress.wall_seconds=nan" in problem(wall_seconds=math.nan)
    assert "history is the record of epoch 1, not 2" in problem(
        history={**progress()["history"], "epoch": 1}
    )
    assert "'student/top5'] is 700.0, not a percentage" in problem(
        history={**progress()["history"], "student/top5": 700.0}
    )
    assert "wandb_id" in problem(wandb_id="../x")


def test_a_transfer_runs_history_is_its_last_evaluated_epoch():
    """sdrun-transfer scores every eval_every-th epoch and the last: after epoch 5 of 6 with
    eval_every=2 the history is epoch 4's."""
    history = {"epoch": 4, "test/miou": 31.5, "per_class": [40.0, math.nan]}
    p = {"epoch": 5, "best_top1": -1.0, "best_epoch": 0, "history": history}
    config = {"schedule": {"epochs": 6, "eval_every": 2}}
    assert progress_problem({"epoch": 5, "progress": p}, Progress, config) is None
    p["history"] = {**history, "epoch": 5}
    assert "record of epoch 5, not 4" in progress_problem(
        {"epoch": 5, "progress": p}, Progress, config
    )
    p["history"] = {**history, "per_class": [140.0]}
    assert "holds 140.0, not a percentage" in progress_problem(
        {"epoch": 5, "progress": p}, Progress, config
    )


def test_progress_must_agree_with_metrics_jsonl_where_it_holds_every_epoch():
    rows = [
        {"epoch": 1, "student/top1": 45.0},
        {"epoch": 2, "student/top1": 40.0, "lr": 0.01},
        {"epoch": 3, "student/top1": 99.0},
    ]  # fmt: skip (epoch 3: killed before its save)
    assert metrics_problem(progress(), rows) is None
    assert "metrics.jsonl says 40.0" in metrics_problem(
        progress(history={**progress()["history"], "student/top1": 44.0}), rows
    )
    assert "best student/top1 is 45.0 at epoch 1" in metrics_problem(progress(best_epoch=2), rows)
    assert metrics_problem(progress(best_epoch=2), rows[1:]) is None  # epoch 1 missing: not used
