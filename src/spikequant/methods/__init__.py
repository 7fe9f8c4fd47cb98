"""Training methods: each is one module of this package defining a :class:`Method` subclass
decorated with :func:`register_method`. Importing the package imports every module in it (as
timm's models package does), so adding a method is one new file plus a recipe; the registry in
:mod:`.base` imports no method."""

from __future__ import annotations

import importlib
import pkgutil

from .base import Method, get_method, list_methods, register_method

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in ("base",) and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Method", "get_method", "list_methods", "register_method"]
