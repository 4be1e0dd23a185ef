"""Environments: ``make_env(name)`` over gymnax 1.0 (Brax and the JAX suites through adapters), and probe
environments for debugging learners."""

from purejaxppo.envs.deferred import defer_plotting_imports

defer_plotting_imports()  # before anything imports gymnax

from purejaxppo.envs import masked, probes  # noqa: E402
from purejaxppo.envs.adapter import EnvAdapter, describe_envs, known_envs, make_env, register_env  # noqa: E402

probes.register_all(register_env)
masked.register_all(register_env)

__all__ = ["EnvAdapter", "describe_envs", "known_envs", "make_env", "register_env", "masked", "probes"]
