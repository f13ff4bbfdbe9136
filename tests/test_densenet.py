"""CIFAR DenseNet-BC-100 in timm's registry (CPU, small batches, no network)."""

import pytest
import timm
import torch
from torch import nn

import sdrun.models.densenet  # noqa: F401  (registers densenet_bc100 until models/ imports it)
from sdrun.models import build_model
from sdrun.models.densenet import DenseNetBC, densenet_layers_per_block


def expected_params(depth: int, k: int, num_classes: int) -> int:
    """Parameter count of DenseNet-BC by formula (convs without bias, BN has 2 per channel)."""
    n = densenet_layers_per_block(depth)
    chs = 2 * k
    total = 3 * chs * 9  # stem
    for block in range(3):
        for _ in range(n):
            total += 2 * chs + chs * 4 * k  # BN + 1x1 bottleneck
            total += 2 * 4 * k + 4 * k * k * 9  # BN + 3x3
            chs += k
        if block < 2:
            out = chs // 2
            total += 2 * chs + chs * out  # transition BN + 1x1
            chs = out
    return total + 2 * chs + chs * num_classes + num_classes  # final BN + fc


def test_registered_and_sized_like_the_paper():
    assert "densenet_bc100" in timm.list_models("densenet_bc*")
    model = timm.create_model("densenet_bc100", num_classes=100)
    assert isinstance(model, DenseNetBC)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == expected_params(100, 12, 100)
    assert n_params / 1e6 == pytest.approx(0.8, abs=0.01)  # DenseNet paper: 0.8M
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 100  # the "100" of DenseNet-BC-100
    assert model.num_features == 342  # 24 + 16*12 -> 108 + 192 -> 150 + 192
    assert model.pretrained_cfg["architecture"] == "densenet_bc100"


def test_depth_must_be_6n_plus_4():
    assert densenet_layers_per_block(40) == 6
    with pytest.raises(ValueError, match="6n\\+4"):
        DenseNetBC(depth=99)


def test_forward_backward_and_timm_interface():
    model = build_model("densenet_bc100", 10, kwargs={"drop_rate": 0.1})
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 342, 8, 8)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 342)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.reset_classifier(7)
    assert model.eval()(x).shape == (2, 7)


def test_features_only_gives_four_levels():
    model = timm.create_model("densenet_bc100", features_only=True).eval()
    with torch.no_grad():
        shapes = [tuple(f.shape) for f in model(torch.randn(1, 3, 32, 32))]
    assert shapes == [(1, 24, 32, 32), (1, 216, 32, 32), (1, 300, 16, 16), (1, 342, 8, 8)]


def test_pretrained_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("densenet_bc100", pretrained=True)
