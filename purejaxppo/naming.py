"""Name conventions that every layer needs without importing the environments or the config.

Importing gymnax initialises JAX's backend, which a multi-process run may only do after joining
its coordinator, so the configuration and result modules recognise names from here; and the
environments suggest close names with the same :func:`suggest` as the configuration.
"""

import difflib
from typing import Any

BRAX_PREFIX = "brax/"
PLAYGROUND_PREFIX = "playground/"
# MuJoCo Playground's DeepMind Control tasks (``playground/<task>``): their environments and their presets
PLAYGROUND_TASKS = (
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance", "CartpoleBalanceSparse", "CartpoleSwingup",
    "CartpoleSwingupSparse", "CheetahRun", "FingerSpin", "FingerTurnEasy", "FingerTurnHard", "FishSwim", "HopperHop",
    "HopperStand", "HumanoidStand", "HumanoidWalk", "HumanoidRun", "PendulumSwingup", "PointMass", "ReacherEasy",
    "ReacherHard", "SwimmerSwimmer6", "WalkerRun", "WalkerStand", "WalkerWalk")


def is_brax(name: str) -> bool:
    """Whether ``name`` names a Brax task (``brax/<task>[-<backend>]``), valid or not."""
    return name.startswith(BRAX_PREFIX)


def suggest(name: str, choices: Any) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f" (did you mean {' or '.join(close)}?)" if close else ""
