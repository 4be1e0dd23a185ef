"""What a run compiles, and how: its trainer, the chunk of K updates, the chunk size, the saved
programs it compiles through, and the placement of its state.

The runner (:mod:`purejaxppo.run.runner`), a loaded policy (:mod:`purejaxppo.run.policy`), an
evaluation (:mod:`purejaxppo.run.evaluate`) and a sweep (:mod:`purejaxppo.run.sweeps`) build
their programs from here, so none of them imports the training loop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax

from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.train import Trainer, make_trainer
from purejaxppo.run.programs import Programs


def build_trainer(config: PPOConfig, data_parallel: bool = False) -> Trainer:
    """The trainer of a run: data-parallel over this process's devices when asked and there are several."""
    if data_parallel and len(jax.local_devices()) > 1:
        from purejaxppo.scale import parallel

        return parallel.data_parallel_trainer(config, parallel.env_mesh(jax.local_devices()))
    return make_trainer(config)


def auto_chunk(num_updates: int, chunks: int = 20) -> int:
    """About ``num_updates / chunks`` updates per chunk, and a divisor of ``num_updates`` where one
    gives between a quarter and four times that many chunks (then every chunk reuses one
    executable, and no second program is traced, lowered and compiled for a shorter last chunk:
    about 1.4 s for CartPole's default run, warm cache included). Without such a divisor (a
    prime number of updates), the last chunk is shorter."""
    target = max(1, math.ceil(num_updates / chunks))
    divisors = [k for k in range(1, num_updates + 1) if num_updates % k == 0]
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
