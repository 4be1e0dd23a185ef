"""purejaxppo: Proximal Policy Optimization compiled end to end in JAX."""

from purejaxppo.config import ConfigError, HParams, PPOConfig, PRESETS, preset, validate
from purejaxppo.envs import known_envs, make_env, register_env
from purejaxppo.train import METRIC_NAMES, RunnerState, Trainer, make_train, make_trainer
from purejaxppo.policy import Policy, load_policy

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "HParams",
    "METRIC_NAMES",
    "PPOConfig",
    "PRESETS",
    "Policy",
    "RunnerState",
    "Trainer",
    "known_envs",
    "load_policy",
    "make_env",
    "make_train",
    "make_trainer",
    "preset",
    "register_env",
    "validate",
]
