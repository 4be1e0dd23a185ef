"""How a run is managed, apart from what it trains: :class:`RunOptions`, saved in ``run.json``
and reused by a resume, and its one check, :func:`check_option`."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from purejaxppo.core.config import check_integer
from purejaxppo.errors import ConfigError

# The smallest accepted value of each integer option.
MINIMUM = {"chunk_updates": 1, "checkpoint_every": 0, "keep_checkpoints": 1}


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The run-management options of :func:`purejaxppo.run.runner.run` (the ``train`` command's
    "run management" flags); checked when made (:func:`check_option`)."""

    chunk_updates: int | None = None
    """Updates per compiled chunk (None: about 1/20 of the run, a divisor of the number of
    updates where one is near)."""
    checkpoint_every: int | None = None
    """Save a checkpoint after the chunk that reaches each multiple of this many updates, and at
    the end (None: every 5 minutes of training, and at the end; 0: none). Needs a folder."""
    keep_checkpoints: int = 3
    """How many of the latest checkpoints to keep."""
    tensorboard: bool = False
    """Also write TensorBoard event files to ``OUT/tensorboard``."""
    wandb: dict[str, Any] | None = None
    """Also log to Weights & Biases: ``{"project": ..., "mode": "offline"|"online"}``."""
    data_parallel: bool = False
    """Split the environments over all devices of this process and average the gradients
    (:mod:`purejaxppo.scale.parallel`); the same as the default on one device."""
    stop_at_return: float | None = None
    """End the run, as if it had reached its last update, at the end of the first chunk after
    which its final return (the summary's: the episode-weighted mean return of the last 10% of
    the updates so far) is at least this; the run up to there is the same as without it."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_option(field.name, getattr(self, field.name))

    @classmethod
    def resolve(cls, given: dict[str, Any], saved: dict[str, Any] | None = None) -> RunOptions:
        """The options ``given`` (None: not given; each checked first, in order), else the saved
        run's (``run.json``), else the defaults."""
        for name, value in given.items():
            check_option(name, value)
        saved = saved or {}
        chosen = {f.name: given.get(f.name) if given.get(f.name) is not None else saved.get(f.name, f.default)
                  for f in dataclasses.fields(cls)}
        if chosen["wandb"] is False:  # turned off (on a resume of a run that had it)
            chosen["wandb"] = None
        return cls(**chosen)

    def to_dict(self) -> dict[str, Any]:
        """What ``run.json`` holds (with the preset's name added by the runner)."""
        return dataclasses.asdict(self)


def check_option(name: str, value: Any) -> None:
    """Refuse a run option's value in one line (None always passes: the default)."""
    if value is None:
        return
    if name in MINIMUM:
        low = MINIMUM[name]
        check_integer(name, value, low, f"an integer >= {low}, or None for the default", none_ok=True)
    elif name == "stop_at_return":
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ConfigError(f"stop_at_return: got {value!r}; accepted: a finite return, e.g. 475, or None")
    elif name == "wandb":
        if value is not False and not isinstance(value, dict):
            raise ConfigError(f"wandb: got {value!r}; accepted: a dict such as {{'project': 'ppo', 'mode': "
                              "'offline'}, None, or False (off)")
    elif name in ("tensorboard", "data_parallel"):
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{name}: got {value!r}; accepted: true or false")
    else:
        fields = ", ".join(f.name for f in dataclasses.fields(RunOptions))
        raise ConfigError(f"{name}: not a run option; accepted: {fields}")
