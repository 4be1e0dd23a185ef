"""Brax's MuJoCo-class locomotion and control tasks on gymnax 1.0's semantics.

``make_env("brax/hopper")`` (or ``"brax/hopper-spring"``, naming the physics backend) builds
Brax's task through ``brax.envs.get_environment`` and wraps it in :class:`BraxEnv`, a gymnax
``Environment``, so it runs in the same compiled program as every other task:

* a time limit (``max_steps_in_episode``, 1000 physics steps by default, as Brax's own
  ``EpisodeWrapper`` counts them), reported as ``truncated``, apart from ``terminated`` (the
  task's own end, e.g. the hopper falling);
* the observation the last step reached is kept (gymnax's ``info["final_observation"]``)
  before the automatic reset, so a truncated episode is bootstrapped from its true last
  state. Brax's ``AutoResetWrapper`` overwrites it with the cached first state of the
  episode, and training that bootstraps from its observation values the wrong state;
* automatic reset from a fresh random initial state drawn each time (gymnax resets with the
  step's key; Brax's wrapper replays one cached initial state per environment);
* action repeat: the action is applied ``action_repeat`` physics steps, rewards summed,
  stopping at termination; each repeated step counts towards the time limit.

Install with ``pip install -e ".[brax]"``; the base install does not import Brax. The
backends (``generalized``, ``positional``, ``spring``, ``mjx``) differ in speed and in how
closely they follow MuJoCo; ``docs/environments.md`` has the measured tables and the reason for the
default (mjx: MuJoCo's own physics).
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from purejaxppo.errors import ConfigError
from purejaxppo.naming import BRAX_PREFIX

PREFIX = BRAX_PREFIX
TASKS = ("ant", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_double_pendulum",
         "inverted_pendulum", "pusher", "reacher", "swimmer", "walker2d")
BACKENDS = ("generalized", "positional", "spring", "mjx")
DEFAULT_BACKEND = "mjx"  # MuJoCo's own physics: the measured choice, see docs/environments.md
EXTRA = 'pip install -e ".[brax]"'
# Brax's training notebook steps reacher with action repeat 4; every other task with 1.
ACTION_REPEAT = {"reacher": 4}


def names() -> list[str]:
    """Every accepted name: ``brax/<task>`` and ``brax/<task>-<backend>``."""
    return [PREFIX + t for t in TASKS] + [f"{PREFIX}{t}-{b}" for t in TASKS for b in BACKENDS]


def parse_name(name: str) -> tuple[str, str]:
    """``"brax/hopper-spring" -> ("hopper", "spring")``; the backend defaults to DEFAULT_BACKEND.

    Raises:
        ConfigError: an unknown task or backend, naming what is accepted.
    """
    rest = name[len(PREFIX):]
    task, backend = rest, DEFAULT_BACKEND
    for b in BACKENDS:
        if rest.endswith("-" + b):
            task, backend = rest[: -len(b) - 1], b
    if task not in TASKS:
        from purejaxppo.naming import suggest

        raise ConfigError(f"env: unknown Brax task {task!r} in {name!r}{suggest(task, TASKS)}; accepted: "
                          f"brax/<task> or brax/<task>-<backend> with task one of {', '.join(TASKS)} and backend "
                          f"one of {', '.join(BACKENDS)}")
    return task, backend


def with_backend(name: str, backend: str, strict: bool = False) -> str:
    """``name`` with its physics backend replaced; with ``strict`` (the command line's
    ``--brax-backend``), a name that already names another backend is refused instead."""
    if backend not in BACKENDS:
        raise ConfigError(f"--brax-backend: got {backend!r}; accepted: {', '.join(BACKENDS)}")
    if not name.startswith(PREFIX):
        raise ConfigError(f"--brax-backend: {name} is not a Brax environment; accepted: with --env brax/<task>")
    task, named = parse_name(name)
    if strict and name != f"{PREFIX}{task}" and named != backend:
        raise ConfigError(f"--brax-backend: got {backend!r}, but --env {name} names the {named!r} backend; "
                          f"accepted: one of the two (--env {PREFIX}{task} --brax-backend {backend}, or --env "
                          f"{PREFIX}{task}-{backend})")
    return f"{PREFIX}{task}-{backend}"


def import_brax():
    """``brax.envs``, or a one-line error saying how to install it. Brax's optional-backend
    probes (warp) print to stdout on import; they are silenced."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from brax import envs
    except ImportError as e:
        raise ConfigError(f"env: Brax environments need the brax extra ({e.name or e} is missing); "
                          f"accepted: install it with {EXTRA}") from None
    return envs


@struct.dataclass
class BraxParams(environment.EnvParams):
    max_steps_in_episode: int = 1000  # physics steps, as Brax's EpisodeWrapper counts them


@struct.dataclass
class BraxState(environment.EnvState):
    """``time``: physics steps since the episode began; ``brax``: Brax's own ``State``."""

    brax: Any


def _strong(tree: Any) -> Any:
    """Every leaf as a strongly typed array: Brax's reset returns some Python-scalar-derived
    (weakly typed) leaves that its step returns strongly typed, and the auto-reset selects
    between the two."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


class BraxEnv(environment.Environment):
    """A Brax task as a gymnax 1.0 environment (see the module's description)."""

    def __init__(self, task: str, backend: str = DEFAULT_BACKEND, max_steps: int = 1000, action_repeat: int = 1):
        super().__init__()
        envs = import_brax()
        self.task, self.backend = task, backend
        # MJX's reset solves the model's starting state: far more than a step (purejaxppo.envs.vector)
        self.costly_reset = backend == "mjx"
        with warnings.catch_warnings():
            # Brax's loader warns, at every environment it builds, that Brax's own physics is no longer
            # maintained (its MJX backend is MuJoCo's, which is): a notice, not about this run.
            warnings.filterwarnings("ignore", message="Brax System, piplines and environments", category=UserWarning)
            self.brax_env = envs.get_environment(task, backend=backend)
        self.action_repeat = action_repeat  # static: the number of physics steps per action
        self._params = BraxParams(max_steps_in_episode=max_steps)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.task}-{self.backend}"

    @property
    def default_params(self) -> BraxParams:
        return self._params

    def reset_env(self, key: jax.Array, params: BraxParams) -> tuple[jax.Array, BraxState]:
        s = _strong(self.brax_env.reset(key))
        return s.obs, BraxState(time=jnp.zeros((), jnp.int32), brax=s)

    def step_env(self, key: jax.Array, state: BraxState, action: jax.Array, params: BraxParams):
        def physics_step(carry, _):
            s, reward, done, steps = carry
            nxt = _strong(self.brax_env.step(s, action))
            s = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), s, nxt)  # frozen once terminated
            return (s, reward + jnp.where(done, 0.0, nxt.reward), done | (nxt.done > 0),
                    steps + jnp.where(done, 0, 1)), None

        start = (state.brax, jnp.zeros((), jnp.float32), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
        if self.action_repeat == 1:
            (s, reward, terminated, steps), _ = physics_step(start, None)
        else:
            (s, reward, terminated, steps), _ = jax.lax.scan(physics_step, start, None, self.action_repeat)
        state = BraxState(time=state.time + steps, brax=s)
        # the truncation flag comes from gymnax's is_truncated: time >= max_steps_in_episode; the bodies'
        # positions reached, before any reset, are for drawing (unused values are compiled away)
        return s.obs, state, reward, terminated, {"body_positions": self.body_positions(state)}

    def is_terminal(self, state: BraxState, params: BraxParams) -> jax.Array:
        return (state.brax.done > 0) | (state.time >= params.max_steps_in_episode)

    @functools.cached_property
    def observation_size(self) -> int:
        """The observation's length, from the reset's shape alone. (Brax's own ``observation_size``
        runs a whole reset eagerly, one small compiled program per operation: 12 s of a launch on
        MJX's inverted pendulum, against 0.5 s to trace it.)"""
        abstract_key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # Brax's keys are raw uint32[2]
        return int(jax.eval_shape(self.brax_env.reset, abstract_key).obs.shape[-1])

    def action_space(self, params: BraxParams | None = None) -> spaces.Box:
        n = self.brax_env.action_size
        return spaces.Box(-jnp.ones(n), jnp.ones(n), (n,), jnp.float32)

    def observation_space(self, params: BraxParams) -> spaces.Box:
        n = self.observation_size
        return spaces.Box(-jnp.inf * jnp.ones(n), jnp.inf * jnp.ones(n), (n,), jnp.float32)

    def body_positions(self, state: BraxState) -> jax.Array:
        """``[bodies + 2 * segments, 3]`` world points to draw: each body's position, then the two
        ends of each capsule, cylinder or box of the model along its long axis (a body's frame is
        often at its joint: the inverted pendulum's pole starts where the cart is, and only its
        capsule shows the pole)."""
        from brax import math as brax_math

        x = state.brax.pipeline_state.x
        ids, centre, half = self._segments
        world = jnp.concatenate([jnp.zeros((1, 3)), x.pos])  # body 0 is the world, fixed
        rot = jnp.concatenate([jnp.array([[1.0, 0.0, 0.0, 0.0]]), x.rot])
        sys_ = self.brax_env.sys
        geom_rot = jax.vmap(brax_math.quat_mul)(rot[ids], jnp.asarray(sys_.geom_quat)[jnp.asarray(self._segment_geoms, jnp.int32)])
        mid = world[ids] + jax.vmap(brax_math.rotate)(centre, rot[ids])
        axis = jax.vmap(brax_math.rotate)(half, geom_rot)
        ends = jnp.stack([mid - axis, mid + axis], axis=1).reshape(-1, 3)
        return jnp.concatenate([x.pos, ends])

    @functools.cached_property
    def _segment_geoms(self) -> list[int]:
        """The geoms drawn as segments: capsules (3), cylinders (5) and boxes (6)."""
        import numpy as np

        # NumPy copies of the model's arrays: this may first run while a step is being traced
        return [g for g, kind in enumerate(np.asarray(self.brax_env.sys.geom_type)) if int(kind) in (3, 5, 6)]

    @functools.cached_property
    def _segments(self):
        """``(body ids, centres [segments, 3], half axes [segments, 3])`` of the drawn geoms, in their body's frame
        (the half axis in the geom's own frame)."""
        import numpy as np

        sys_ = self.brax_env.sys
        geoms = self._segment_geoms
        sizes, types = np.asarray(sys_.geom_size), np.asarray(sys_.geom_type)  # NumPy first: see _segment_geoms
        half = np.zeros((len(geoms), 3), np.float32)
        for row, g in enumerate(geoms):
            size = sizes[g]
            if int(types[g]) == 6:  # a box: its longest half-extent
                half[row, int(np.argmax(size))] = size.max()
            else:  # a capsule or a cylinder: its half-length along z
                half[row, 2] = size[1]
        return (np.asarray(sys_.geom_bodyid)[geoms].astype(np.int32), np.asarray(sys_.geom_pos)[geoms], half)

    @property
    def body_parents(self) -> list[int]:
        """Parent of each point of :meth:`body_positions` (-1 for none), to draw the skeleton: a body's
        parent body, and each segment's second end joined to its first."""
        bodies = [int(p) for p in self.brax_env.sys.link_parents]
        ends = []
        for k in range(len(self._segment_geoms)):
            first = len(bodies) + 2 * k
            ends += [-1, first]
        return bodies + ends


def make(name: str) -> BraxEnv:
    """The :class:`BraxEnv` of ``brax/<task>[-<backend>]``."""
    task, backend = parse_name(name)
    return BraxEnv(task, backend, action_repeat=ACTION_REPEAT.get(task, 1))
