"""CIFAR ResNets in timm's registry, and build_model's config errors (CPU, no network)."""

import math

import pytest
import timm
import torch
from torch import nn

from sdrun.errors import ConfigError
from sdrun.models import build_model
from sdrun.models.cifar_resnet import CIFAR_DEPTHS

NAMES = [f"resnet{d}" for d in CIFAR_DEPTHS]


def expected_params(n: int, num_classes: int) -> int:
    """Parameter count of a 6n+2 CIFAR ResNet with 1x1-conv shortcuts, by formula."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    in_chs = 16
    for width in (16, 32, 64):
        for block in range(n):
            c_in = in_chs if block == 0 else width
            total += c_in * width * 9 + 2 * width  # conv1 + bn1
            total += width * width * 9 + 2 * width  # conv2 + bn2
            if c_in != width:
                total += c_in * width + 2 * width  # 1x1 shortcut conv + BN
        in_chs = width
    return total + 64 * num_classes + num_classes  # fc


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_exactly_our_depths():
    assert set(CIFAR_DEPTHS) == {20, 32, 44, 56, 110}
    assert sorted(timm.list_models(module="cifar_resnet")) == sorted(NAMES)
    for depth, n in CIFAR_DEPTHS.items():
        assert depth == 6 * n + 2


@pytest.mark.parametrize("depth", sorted(CIFAR_DEPTHS))
def test_create_model_builds_each_depth_with_expected_size(depth: int):
    n = CIFAR_DEPTHS[depth]
    model = timm.create_model(f"resnet{depth}", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # 6n+1 convs on the main path (the +1 of 6n+2 is the fc), plus two 1x1 shortcut convs.
    assert len(convs) == 6 * n + 1 + 2
    assert sum(m.kernel_size == (1, 1) for m in convs) == 2
    assert n_params(model) == expected_params(n, 10)
    assert model.num_classes == 10 and model.num_features == 64
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg["num_classes"] == 100
    assert model.pretrained_cfg["architecture"] == f"resnet{depth}"


def test_param_counts_match_the_literature():
    # ResNet-20/32/56/110 with 10 classes: ~0.27M, ~0.47M, ~0.86M, ~1.7M parameters.
    for depth, millions in [(20, 0.27), (32, 0.47), (56, 0.86), (110, 1.73)]:
        assert expected_params(CIFAR_DEPTHS[depth], 10) / 1e6 == pytest.approx(millions, abs=0.01)


@pytest.mark.parametrize("name", ["resnet20", "resnet32"])
def test_forward_shape(name: str):
    model = timm.create_model(name, num_classes=100).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_timm_interface_and_reset_classifier():
    model = timm.create_model("resnet20", num_classes=100, drop_rate=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 64, 8, 8)
        assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
        assert torch.equal(model.forward_head(feats), model(x))
    assert model.head_drop.p == 0.25
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.get_classifier().out_features == 7
    assert model(x).shape == (2, 7)
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)


def test_in_chans_and_features_only():
    model = timm.create_model("resnet20", num_classes=10, in_chans=1)
    assert model.conv1.in_channels == 1
    feats = timm.create_model("resnet20", features_only=True)
    assert feats.feature_info.channels() == [16, 16, 32, 64]
    assert feats.feature_info.reduction() == [1, 1, 2, 4]


def test_init_kaiming_fan_out_and_unit_bn():
    torch.manual_seed(0)
    model = timm.create_model("resnet20", num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    conv = model.layer3[1].conv1  # 64 -> 64, 3x3: fan_out = 576
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.05)


def test_pretrained_cifar_resnet_raises_clear_error():
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet56", pretrained=True)
    with pytest.raises(ConfigError, match="model.pretrained"):
        build_model("resnet56", 100, pretrained=True)


def test_build_model_timm_zoo_model_offline():
    model = build_model("resnet18", 7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_build_model_passes_kwargs():
    model = build_model("resnet32", 10, in_chans=1, kwargs={"drop_rate": 0.1})
    assert model.num_classes == 10 and model.in_chans == 1 and model.head_drop.p == 0.1


def test_unknown_name_names_key_and_close_match():
    with pytest.raises(ConfigError) as info:
        build_model("resnet57", 100)
    msg = str(info.value)
    assert "model.name='resnet57'" in msg and "resnet56" in msg and "\n" not in msg


def test_bad_kwargs_name_model_kwargs():
    with pytest.raises(ConfigError, match="model.kwargs"):
        build_model("resnet20", 10, kwargs={"no_such_arg": 1})
    with pytest.raises(ConfigError, match="model.kwargs.num_classes"):
        build_model("resnet20", 10, kwargs={"num_classes": 5})
