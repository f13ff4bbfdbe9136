"""Training methods as plug-ins: one module per method, registered by name
(`@register_method("sd")`) and chosen with `distill=<name>`.

Adding a method is one module here (a `Method` subclass, sdrun/methods/base.py; imported
below) and one `conf/distill/<name>.yaml`.
"""

from sdrun.methods import kd, none, sd  # noqa: F401  (each registers its method)
from sdrun.methods.base import FILE, SNAPSHOT, Method, MethodOutput, MethodStep
from sdrun.methods.registry import (
    build_method,
    find_method,
    method_class,
    method_label,
    method_names,
    register_method,
)

__all__ = [
    "FILE",
    "SNAPSHOT",
    "Method",
    "MethodOutput",
    "MethodStep",
    "build_method",
    "find_method",
    "method_class",
    "method_label",
    "method_names",
    "register_method",
]
