"""Training methods as plug-ins: one module per method, chosen with `distill=<name>`.

Adding a method is one module here (a `Method` subclass, sdrun/methods/base.py, with its
settings dataclass, decorated with `@register_method`): every module of this package is
imported below, which registers its methods and their settings as the `distill` group's
options. Nothing else names a method: `--help`, the report's row identity and the bench ask
the registry.
"""

import importlib
import pkgutil

from sdrun.config import MethodSettings
from sdrun.methods.base import FILE, SNAPSHOT, Method, MethodOutput, MethodStep, RunShape
from sdrun.methods.registry import (
    build_method,
    default_settings,
    find_method,
    method_class,
    method_label,
    method_names,
    register_method,
    settings_keys,
    unregister_method,
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
    "MethodSettings",
    "MethodStep",
    "RunShape",
    "build_method",
    "default_settings",
    "find_method",
    "method_class",
    "method_label",
    "method_names",
    "register_method",
    "settings_keys",
    "unregister_method",
]
