"""Importing gymnax without paying for its plotting libraries.

gymnax imports ``matplotlib.pyplot`` and ``seaborn`` when it is imported, for the rendering
of two of its ``misc`` environments; training never uses them, and they are a large part of a
command's start-up (seaborn alone pulls in ``scipy.stats``). Before gymnax is imported, each is
registered as a stand-in module that imports the real one at its first attribute use (gymnax's
``misc`` rendering, or our own plots after training) and then forwards to it. Nothing changes
except when the cost is paid.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

DEFERRED = ("matplotlib.pyplot", "seaborn")


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is used."""

    def __init__(self, name: str, spec: Any) -> None:
        super().__init__(name)
        self.__spec__ = spec

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            real = _load(self.__name__, self)
        return getattr(real, attr)


def _load(name: str, stand_in: _Deferred) -> types.ModuleType:
    if sys.modules.get(name) is stand_in:
        del sys.modules[name]
    real = importlib.import_module(name)
    stand_in.__dict__["_real"] = real
    return real


def defer_plotting_imports() -> None:
    """Register stand-ins for :data:`DEFERRED` (those not imported yet, and installed)."""
    for name in DEFERRED:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        stand_in = _Deferred(name, spec)
        sys.modules[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent:  # as the import system does: the submodule is an attribute of its package
            setattr(sys.modules[parent], child, stand_in)
