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

# Every module of the package, found on disk: importing one registers the methods it defines.
# The others (the losses, byot's heads) are imported by the methods anyway.
for _module in pkgutil.iter_modules(__path__):
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
