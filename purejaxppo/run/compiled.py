"""What a run compiles, and how: its trainer, the chunk of K updates, the chunk size, the saved
programs it compiles through, and the placement of its state.

The runner (:mod:`purejaxppo.run.runner`), a loaded policy (:mod:`purejaxppo.run.policy`), an
evaluation (:mod:`purejaxppo.run.evaluate`) and a sweep (:mod:`purejaxppo.run.sweeps`) build
their programs from here, so none of them imports the training loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any, Callable

import jax

from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.train import Trainer, make_trainer
from purejaxppo.errors import ConfigError
from purejaxppo.run.programs import Programs


def build_trainer(config: PPOConfig, data_parallel: bool = False) -> Trainer:
    """The trainer of a run: data-parallel over this process's devices when asked and there are several
    (its sizes checked against the devices' memory, :func:`check_memory`)."""
    if data_parallel and len(jax.local_devices()) > 1:
        from purejaxppo.scale import parallel

        trainer = parallel.data_parallel_trainer(config, parallel.env_mesh(jax.local_devices()))
        check_memory(trainer, devices=len(jax.local_devices()))
        return trainer
    trainer = make_trainer(config)
    check_memory(trainer)
    return trainer


def env_bytes(trainer: Trainer) -> int:
    """Bytes of one environment's state and observation (traced for shapes only, not run)."""
    shapes = jax.eval_shape(trainer.env.reset, jax.random.key(0))
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes)
               if hasattr(x, "dtype") and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))


def memory_bytes() -> tuple[int, str]:
    """``(bytes, what)``: the memory of this process's first device (a CPU's: the machine's)."""
    device = jax.local_devices()[0]
    with contextlib.suppress(Exception):
        limit = (device.memory_stats() or {}).get("bytes_limit")
        if limit:
            return int(limit), f"the {device.platform} device's"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's"


def check_fits(what: str, needed: int, accepted: str, devices: int = 1) -> None:
    """Refuse, in one line naming the limit, a size whose arrays alone would exceed the memory."""
    have, whose = memory_bytes()
    if needed > have * devices:
        raise ConfigError(f"{what} need at least {needed / 2**30:,.1f} GiB, more than {whose} {have * devices / 2**30:,.1f} "
                          f"GiB of memory; accepted: {accepted}")


def check_memory(trainer: Trainer, agents: int = 1, devices: int = 1) -> None:
    """The run's environments and its rollout (a lower bound on what it holds: each transition's
    observation and six numbers) fit in memory, checked before anything is traced or written."""
    c = trainer.config
    per_env = 2 * env_bytes(trainer) + 4 * sum(c.actor_hidden)  # the state before and after a step, activations
    needed = agents * (c.num_envs * per_env + c.batch_size * (trainer.env.obs_dim + 6) * 4)
    many = f"{agents} agents x " if agents > 1 else ""
    check_fits(f"{many}{c.num_envs} environments x {c.num_steps} steps of rollout", needed,
               "a smaller num_envs or num_steps" + (", or fewer agents" if agents > 1 else ""), devices)


def auto_chunk(num_updates: int, chunks: int = 20) -> int:
    """About ``num_updates / chunks`` updates per chunk, and a divisor of ``num_updates`` where one
    gives between a quarter and four times that many chunks (then every chunk reuses one
    executable, and no second program is traced, lowered and compiled for a shorter last chunk:
    about 1.4 s for CartPole's default run, warm cache included). Without such a divisor (a
    prime number of updates), the last chunk is shorter."""
    target = max(1, math.ceil(num_updates / chunks))
    small = [k for k in range(1, math.isqrt(num_updates) + 1) if num_updates % k == 0]  # sqrt(n) steps, not n
    divisors = sorted({*small, *(num_updates // k for k in small)})
    near = [k for k in divisors if chunks / 4 <= num_updates / k <= chunks * 4]
    if near:  # the chunk count closest to ``chunks`` in ratio
        return min(near, key=lambda k: (abs(math.log(num_updates / k / chunks)), -k))
    return target


def make_chunk(trainer: Trainer, num_updates: int) -> Callable:
    """``chunk(state, hparams) -> (state, metrics[num_updates])``; pure (the runner compiles it
    with ``state`` donated)."""

    def chunk(state, hparams):
        return jax.lax.scan(lambda s, _: trainer.update(s, hparams), state, None, length=num_updates)

    return chunk


def make_programs(trainer: Trainer, folder: str | None) -> Programs:
    """How a run compiles its programs: through the saved programs in ``folder``
    (:mod:`purejaxppo.run.programs`) for a one-device trainer in one process, else directly."""
    if folder is None or trainer.mesh is not None or jax.process_count() > 1:
        return Programs(None)
    tuning = dataclasses.asdict(trainer.tuning) if trainer.tuning is not None else None
    return Programs(folder, {"config": trainer.config.to_dict(), "tuning": tuning})


def init_shapes(trainer: Trainer, programs: Programs) -> Any:
    """The shapes and dtypes of the trainer's initial state (what a checkpoint is restored into)."""
    config = trainer.config
    return programs.shapes("init", trainer.init, (jax.random.key(config.seed), HParams.from_config(config)))


def placed(trainer: Trainer, state: Any) -> Any:
    """``state``, fresh or restored, typed and placed one way, so that a run and its resume trace the same
    chunk programs: weakly typed arrays (a Python number's type, such as gymnax's ``time=0``; a checkpoint
    restores none) given their dtype, and every array committed to the trainer's device or mesh."""
    state = jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype) if getattr(x, "weak_type", False) else x,
                         state)
    if trainer.mesh is not None:
        from purejaxppo.scale import parallel

        return jax.device_put(state, parallel.state_shardings(trainer.mesh, state))
    return jax.device_put(state, jax.local_devices()[0])
