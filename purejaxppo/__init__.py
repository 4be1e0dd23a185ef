"""purejaxppo: Proximal Policy Optimization compiled end to end in JAX.

The package is layered, and data flows one way::

    core/   the pure, jittable algorithm (config, networks, rollout, GAE, losses, update, train)
    envs/   make_env(name) over gymnax 1.0; probe environments
    scale/  sweeps over seeds and settings, data parallelism, several processes
    run/    the chunked runner, checkpoints, loggers, result files, evaluation, loaded policies
    cli.py  the `purejaxppo` command

The names below are imported on first use, so that ``import purejaxppo`` (and the command
line) touch neither gymnax nor a JAX backend until they are needed: a multi-process run must
call ``jax.distributed.initialize`` before anything starts a backend, and importing gymnax does.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "PurejaxppoError": "purejaxppo.errors",
    "ConfigError": "purejaxppo.errors",
    "HParams": "purejaxppo.core.config",
    "PPOConfig": "purejaxppo.core.config",
    "validate": "purejaxppo.core.config",
    "PRESETS": "purejaxppo.core.presets",
    "preset": "purejaxppo.core.presets",
    "METRIC_NAMES": "purejaxppo.core.metrics",
    "RunnerState": "purejaxppo.core.state",
    "Trainer": "purejaxppo.core.train",
    "make_train": "purejaxppo.core.train",
    "make_trainer": "purejaxppo.core.train",
    "known_envs": "purejaxppo.envs",
    "make_env": "purejaxppo.envs",
    "register_env": "purejaxppo.envs",
    "make_data_parallel_train": "purejaxppo.scale.parallel",
    "sweep": "purejaxppo.run.sweeps",
    "Distribution": "purejaxppo.scale.plan",
    "Policy": "purejaxppo.run.policy",
    "load_policy": "purejaxppo.run.policy",
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
