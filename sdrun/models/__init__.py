"""Models: timm's zoo plus the CIFAR nets (ResNets, DenseNet-BC) this package registers in timm."""

from sdrun.models import cifar_resnet, densenet  # noqa: F401  (registers resnet20..110, densenet_bc100)
from sdrun.models.build import build_model

__all__ = ["build_model"]
