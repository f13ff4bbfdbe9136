"""Models: timm's zoo plus CIFAR ResNets, which importing this package registers into timm."""

from sdrun.models import cifar_resnet  # noqa: F401  (registers resnet20 ... resnet110)
from sdrun.models.build import build_model

__all__ = ["build_model"]
