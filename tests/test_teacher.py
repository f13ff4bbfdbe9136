"""The snapshot teacher: a frozen copy, prepared for cheap inference, outputs unchanged."""

import copy

import pytest
import timm
import torch
from torch import nn

import sdrun.models  # noqa: F401 - registers the CIFAR ResNets
from sdrun.batches import Batch
from sdrun.errors import CheckpointError
from sdrun.training.folding import BATCHNORMS, fold_batchnorm
from sdrun.training.frozen_teacher import (
    FrozenTeacher,
    PrecomputedTeacher,
    load_teacher_weights,
    predict_in_chunks,
    snapshot,
    teacher_dtype,
)


def trained_like(name: str = "resnet20", seed: int = 0, size: int = 32) -> nn.Module:
    """A model whose BN statistics are not the init values (as after some training)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, num_classes=10)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, size, size) * 2 + 0.5)
    return model


def test_snapshot_is_a_frozen_eval_copy():
    student = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    student.train()
    student(torch.randn(8, 4))  # moves BN running stats
    teacher = snapshot(student)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    for (name, a), (_, b) in zip(student.state_dict().items(), teacher.state_dict().items()):
        assert torch.equal(a, b), name
        assert a.data_ptr() != b.data_ptr(), f"{name} is shared, not copied"
    with torch.no_grad():
        student[0].weight.add_(1.0)
    assert not torch.equal(student[0].weight, teacher[0].weight)


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepared_teacher_matches_the_plain_snapshot_in_fp32(channels_last):
    student = trained_like()
    plain = snapshot(student)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    prepared = FrozenTeacher(student, torch.float32, fmt)
    x = torch.randn(32, 3, 32, 32).contiguous(memory_format=fmt)
    with torch.no_grad():
        expected = plain(x)
    got = prepared(x)
    assert got.dtype == torch.float32 and not got.requires_grad
    assert (got - expected).abs().max().item() < 1e-4


def test_batchnorm_is_folded_away():
    folded = fold_batchnorm(snapshot(trained_like()))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_unfoldable_models_fall_back_to_the_plain_snapshot():
    class Dynamic(nn.Module):  # data-dependent control flow: fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    model = Dynamic().eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(fold_batchnorm(model)(x), model(x))


def test_bf16_teacher_is_close_and_returns_fp32():
    student = trained_like()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        expected = snapshot(student)(x)
    got = FrozenTeacher(student, torch.bfloat16)(x)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=0.15, rtol=0.05)


def test_refresh_takes_the_new_snapshot_in_place_and_ignores_later_student_updates():
    student = trained_like(seed=0)
    teacher = FrozenTeacher(student)
    params_before = [p.data_ptr() for p in teacher.net.parameters()]
    other = trained_like(seed=1)
    student.load_state_dict(other.state_dict())
    teacher.refresh(student)
    assert [p.data_ptr() for p in teacher.net.parameters()] == params_before
    for name, value in other.state_dict().items():
        assert torch.equal(teacher.snapshot_state[name], value), name
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = snapshot(other)(x)
        for p in student.parameters():  # the student keeps training; the teacher must not move
            p.add_(1.0)
    assert (teacher(x) - expected).abs().max().item() < 1e-4


def test_teacher_stays_in_eval_mode():
    teacher = FrozenTeacher(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4)))
    teacher.train()
    assert not any(m.training for m in teacher.modules())
    x = torch.randn(8, 4)
    assert torch.equal(teacher(x), teacher(x))  # no dropout noise


def test_teacher_keeps_no_autograd_graph():
    student = trained_like()
    teacher = FrozenTeacher(student)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    out = teacher(x)
    assert out.grad_fn is None


def test_load_teacher_weights_from_a_checkpoint(tmp_path):
    source = trained_like(seed=3)
    torch.save({"model": source.state_dict()}, tmp_path / "t.pt")
    teacher = load_teacher_weights(trained_like(seed=4), tmp_path / "t.pt")
    for name, value in source.state_dict().items():
        assert torch.equal(teacher.state_dict()[name], value)
    with pytest.raises(CheckpointError, match="distill.teacher_checkpoint"):
        load_teacher_weights(source, tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="distill.teacher_checkpoint"):
        load_teacher_weights(source, tmp_path / "bad.pt")


def batches_of(sizes: list[int], seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [Batch(torch.randn(n, 3, 32, 32, generator=g), torch.zeros(n, dtype=torch.long))
            for n in sizes]  # fmt: skip


@pytest.mark.parametrize("chunk", [1, 48, 1000])
def test_logits_predicted_in_chunks_match_one_batch_at_a_time(chunk):
    teacher = FrozenTeacher(trained_like())
    batches = batches_of([16, 16, 16, 16, 16, 7])
    got = predict_in_chunks(teacher, batches, chunk)
    assert [len(t) for t in got] == [16, 16, 16, 16, 16, 7]
    for (x, *_), logits in zip(batches, got):
        assert (logits - teacher(x)).abs().max().item() < 1e-4


def test_precomputed_teacher_hands_back_each_batch_in_order_then_refuses_extra_batches():
    teacher = FrozenTeacher(trained_like())
    batches = batches_of([8, 8, 8])
    replay = PrecomputedTeacher(teacher, iter(batches), chunk=16)
    for x, *_ in batches:
        assert (replay(x) - teacher(x)).abs().max().item() < 1e-4
    with pytest.raises(RuntimeError, match="trainer.teacher_precompute=0"):
        replay(batches[0][0])


def test_precomputed_teacher_refuses_a_batch_of_another_size():
    replay = PrecomputedTeacher(FrozenTeacher(trained_like()), iter(batches_of([8, 8])), chunk=16)
    with pytest.raises(RuntimeError, match="do not match batch 0"):
        replay(torch.randn(4, 3, 32, 32))


def test_compiled_teacher_takes_a_refresh_without_recompiling():
    """The in-place refresh must reach the compiled graph's weights, with no new compilation."""
    torch.manual_seed(0)
    student = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 8 * 8, 5),
    )  # fmt: skip
    student.eval()
    teacher = FrozenTeacher(student, compile=True)
    x = torch.randn(4, 3, 8, 8)
    before = teacher(x)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    with torch._dynamo.config.patch(error_on_recompile=True):
        teacher.refresh(student)
        after = teacher(x)
    with torch.no_grad():
        expected = student(x)
    assert (after - before).abs().max().item() > 1e-2
    assert (after - expected).abs().max().item() < 1e-4


class ConvCalledTwice(nn.Module):
    """A conv whose first call is followed by BN and whose second is not: fx's fuse swaps the
    conv module everywhere, so folding the BN would change the second call too."""

    pretrained_cfg = {"input_size": (3, 8, 8)}  # where the teacher takes its probe shape from

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x)).relu()
        return self.head(self.conv(x).mean((2, 3)))


def with_moved_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """`model` with BN statistics and affine parameters away from their identity init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.2)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def test_a_conv_called_twice_is_not_folded_and_keeps_the_snapshot_outputs(caplog):
    torch.manual_seed(0)
    model = with_moved_bn(ConvCalledTwice())
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        expected = snapshot(model)(x)
        assert (fold_batchnorm(model)(x) - expected).abs().max() > 0.1  # the hazard is real
    with caplog.at_level("WARNING", logger="sdrun.training.folding"):
        teacher = FrozenTeacher(model)
    assert (teacher(x) - expected).abs().max().item() < 1e-5
    assert [r.message for r in caplog.records if "folding BN changed" in r.message]
    assert not teacher.folded


def test_refresh_checks_the_fold_again_and_rebuilds_when_it_no_longer_holds():
    """With BN at its init the fold changes nothing measurable; once training moves BN the new
    snapshot's fold fails the check and the teacher becomes the unfolded snapshot."""
    torch.manual_seed(0)
    student = ConvCalledTwice().eval()
    teacher = FrozenTeacher(student)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in teacher.net.modules())  # folded
    with_moved_bn(student)
    teacher.refresh(student)
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        expected = snapshot(student)(x)
    assert (teacher(x) - expected).abs().max().item() < 1e-5
    assert not teacher.folded


def test_the_shipped_resnet20_is_still_folded(caplog):
    with caplog.at_level("INFO", logger="sdrun"):
        teacher = FrozenTeacher(trained_like())  # the probe's shape: timm's pretrained_cfg
    assert not any(isinstance(m, nn.BatchNorm2d) for m in teacher.net.modules())
    assert not [r for r in caplog.records if "fold" in r.message]
    assert teacher.folded and teacher.dtype == torch.float32


def test_a_sync_batchnorm_student_gives_a_folded_teacher_with_the_same_outputs():
    """trainer.sync_bn=true converts the student's BN to SyncBatchNorm (eval mode needs no
    process group); the teacher turns it back into BatchNorm2d and folds it."""
    student = trained_like()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        expected = snapshot(student)(x)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(student))
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    teacher = FrozenTeacher(synced)
    assert not any(isinstance(m, BATCHNORMS) for m in teacher.net.modules())
    assert (teacher(x) - expected).abs().max().item() < 1e-4
    assert teacher.folded
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())  # student untouched
    assert teacher.snapshot_state.keys() == student.state_dict().keys()


def test_teacher_dtype_follows_the_amp_dtype():
    assert teacher_dtype(None) is torch.float32
    assert teacher_dtype(torch.bfloat16) is torch.bfloat16
    assert teacher_dtype(torch.float16) is torch.float16


@pytest.mark.parametrize("name,size", [("resnet20", 32), ("densenet_bc100", 16)])
def test_shipped_nets_give_finite_fp16_teacher_logits_close_to_fp32(name, size):
    """fp16 convolutions run on this torch's CPU too, so the numerics are checked everywhere
    (tests/test_gpu.py checks the fp16 teacher on CUDA)."""
    student = trained_like(name, size=size)
    x = torch.randn(8, 3, size, size)
    fp32 = FrozenTeacher(student, torch.float32, input_shape=(3, size, size))(x)
    teacher = FrozenTeacher(student, torch.float16, input_shape=(3, size, size))
    assert teacher.dtype is torch.float16 and teacher.folded
    fp16 = teacher(x)
    assert fp16.dtype == torch.float32 and torch.isfinite(fp16).all()
    assert (fp16 - fp32).abs().max().item() <= 1e-2 * fp32.abs().max().item()
    assert torch.equal(fp16.argmax(1), fp32.argmax(1))


def test_a_teacher_whose_fp16_logits_overflow_runs_in_fp32(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).eval()
    with torch.no_grad():  # hidden units of 1 into weights of 3e4: logits of 2.4e5 > 65504
        model[0].weight.zero_()
        model[0].bias.fill_(1.0)
        model[2].weight.fill_(3e4)
    with caplog.at_level("WARNING", logger="sdrun.training.frozen_teacher"):
        teacher = FrozenTeacher(model, torch.float16, input_shape=(8,))
    assert teacher.dtype is torch.float32
    assert [r for r in caplog.records if "overflow" in r.message]
    x = torch.randn(4, 8)
    assert torch.isfinite(teacher(x)).all()


def test_a_probe_shape_the_net_rejects_keeps_the_unfolded_snapshot():
    """timm's pretrained_cfg may name an input size the net was not built for (the runner passes
    the dataset's shape instead); the teacher then stays unfolded rather than failing."""
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).eval()
    model.pretrained_cfg = {"input_size": (3, 8, 8)}
    teacher = FrozenTeacher(model)
    x = torch.randn(4, 8)
    with torch.no_grad():
        expected = model(x)
    assert not teacher.folded and torch.equal(teacher(x), expected)
