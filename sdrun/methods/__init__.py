"""Training methods as plug-ins: one module per method, registered by name
(`@register_method("sd")`) and chosen with `distill=<name>`.

Adding a method is one module here (a `Method` subclass, sdrun/methods/base.py) and one
`conf/distill/<name>.yaml`: every module of this package is imported below, which registers
its methods.
"""

import importlib
import pkgutil

from sdrun.methods.base import FILE, SNAPSHOT, Method, MethodOutput, MethodStep, RunShape
from sdrun.methods.registry import (
    build_method,
    find_method,
    method_class,
    method_label,
    method_names,
    register_method,
)

# No method in these (byot_heads: the modules byot trains beside the student).
_MACHINERY = {"base", "registry", "losses", "distill_loss", "selfkd", "byot_heads"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _MACHINERY:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "FILE",
    "SNAPSHOT",
    "Method",
    "MethodOutput",
    "MethodStep",
    "RunShape",
    "build_method",
    "find_method",
    "method_class",
    "method_label",
    "method_names",
    "register_method",
]
