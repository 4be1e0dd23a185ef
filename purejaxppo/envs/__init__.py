"""Environments: ``make_env(name)`` over gymnax 1.0, and probe environments for debugging learners."""

from purejaxppo.envs import probes
from purejaxppo.envs.adapter import EnvAdapter, known_envs, make_env, register_env

probes.register_all(register_env)

__all__ = ["EnvAdapter", "known_envs", "make_env", "register_env", "probes"]
