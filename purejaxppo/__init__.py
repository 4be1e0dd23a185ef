"""purejaxppo: Proximal Policy Optimization compiled end to end in JAX.

The names below are imported on first use, so that ``import purejaxppo`` (and the command
line) touch neither gymnax nor a JAX backend until they are needed: a multi-process run must
call ``jax.distributed.initialize`` before anything starts a backend, and importing gymnax does.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "purejaxppo.config",
    "HParams": "purejaxppo.config",
    "PPOConfig": "purejaxppo.config",
    "PRESETS": "purejaxppo.config",
    "preset": "purejaxppo.config",
    "validate": "purejaxppo.config",
    "known_envs": "purejaxppo.envs",
    "make_env": "purejaxppo.envs",
    "register_env": "purejaxppo.envs",
    "METRIC_NAMES": "purejaxppo.train",
    "RunnerState": "purejaxppo.train",
    "Trainer": "purejaxppo.train",
    "make_train": "purejaxppo.train",
    "make_trainer": "purejaxppo.train",
    "make_data_parallel_train": "purejaxppo.parallel",
    "Policy": "purejaxppo.policy",
    "load_policy": "purejaxppo.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'purejaxppo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
