"""What a sweep trains: settings from a grid and random search, crossed with seeds.

Parsing the command line's ``FIELD=...`` specs checks their syntax only; :func:`make_plan`
checks, once, that every field can be swept and that every value is valid for its field.
"""

from __future__ import annotations

import itertools
import math
import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.core.config import HParams, PPOConfig, check_sweepable, validate_field
from purejaxppo.errors import ConfigError

DISTRIBUTIONS = ("uniform", "log-uniform", "choice")


class Distribution(NamedTuple):
    """A random-search distribution: ``uniform``/``log-uniform`` on ``[low, high]`` or ``choice`` of values."""

    kind: str
    values: tuple[float, ...]  # (low, high) or the choices


class SweepPlan(NamedTuple):
    """``A = G settings x S seeds`` agents; agent ``g * S + s`` uses setting ``g`` and seed key ``s``."""

    settings: list[dict[str, float]]  # G settings: swept field -> value
    num_seeds: int  # S
    seed_keys: jax.Array  # [S] the same for every setting (common random numbers)

    @property
    def num_agents(self) -> int:
        return len(self.settings) * self.num_seeds

    def agent_keys(self) -> jax.Array:
        """``[A]`` the key of every agent, setting-major."""
        return jnp.concatenate([self.seed_keys] * len(self.settings))


def parse_grid(spec: str) -> tuple[str, list[float]]:
    """``"lr=1e-3,3e-4"`` -> ``("lr", [1e-3, 3e-4])``."""
    field, sep, values = spec.partition("=")
    field = field.strip().replace("-", "_")
    if not sep or not field:
        raise ConfigError(f"grid: {spec!r} is not FIELD=V1,V2,...; for example lr=1e-3,3e-4")
    items = [v.strip() for v in values.split(",")]
    if not any(items):
        raise ConfigError(f"grid: {field} has an empty list of values; accepted: FIELD=V1,V2,...")
    if not all(items):
        raise ConfigError(f"grid: {field}={values} has an empty value; accepted: FIELD=V1,V2,... with a number "
                          "between every two commas")
    try:
        return field, [float(v) for v in items]
    except ValueError:
        bad = next(v for v in items if not _is_float(v))
        raise ConfigError(f"grid: {field} value {bad!r} is not a number; accepted: numbers like 3e-4") from None


def parse_sample(spec: str) -> tuple[str, Distribution]:
    """``"lr=log-uniform:1e-4:1e-2"``, ``"gamma=uniform:0.9:0.999"`` or ``"ent_coef=choice:0,0.01"``."""
    field, sep, dist = spec.partition("=")
    field = field.strip().replace("-", "_")
    if not sep or not field:
        raise ConfigError(f"sample: {spec!r} is not FIELD=DIST:...; for example lr=log-uniform:1e-4:1e-2")
    kind, _, rest = dist.partition(":")
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"sample: {field} has distribution {kind!r}; accepted: {', '.join(DISTRIBUTIONS)}")
    parts = rest.replace(",", ":").split(":") if kind == "choice" else rest.split(":")
    if not all(_is_float(p) for p in parts):
        raise ConfigError(f"sample: {field}={dist!r} needs numbers; accepted: {kind}:" + _FORMS[kind])
    distribution = Distribution(kind, tuple(float(p) for p in parts))
    check_distribution(field, distribution)
    return field, distribution


_FORMS = {"uniform": "LOW:HIGH", "log-uniform": "LOW:HIGH", "choice": "V1,V2,..."}


def _all_numbers(values: Any) -> bool:
    """A list, tuple or array of Python or NumPy numbers (no bools, no string)."""
    return (not isinstance(values, (str, bytes)) and isinstance(values, (list, tuple, np.ndarray))
            and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values))


def _shown(dist: Distribution) -> str:
    return f"{dist.kind}:" + (",".join if dist.kind == "choice" else ":".join)(f"{v:g}" for v in dist.values)


def check_distribution(field: str, dist: Distribution) -> None:
    """A well-formed distribution whose every possible draw is a valid value of ``field`` (both
    ends of a range, every choice): what is accepted never depends on the draws."""
    check_sweepable(field, "sample")
    if not isinstance(dist, Distribution) or dist.kind not in DISTRIBUTIONS:
        got = dist.kind if isinstance(dist, Distribution) else dist
        raise ConfigError(f"sample: {field} has distribution {got!r}; accepted: Distribution(KIND, VALUES) with KIND "
                          f"one of {', '.join(DISTRIBUTIONS)}")
    values = dist.values
    if isinstance(values, np.ndarray) and values.ndim == 1:
        values = values.tolist()
    if not isinstance(values, (tuple, list)) or not _all_numbers(values):
        raise ConfigError(f"sample: {field} {dist.kind} values {values!r} are not numbers; accepted: "
                          f"{dist.kind}:{_FORMS[dist.kind]}")
    if dist.kind == "choice":
        if not values:
            raise ConfigError(f"sample: {field}=choice has no values; accepted: choice:V1,V2,...")
    else:
        if len(values) != 2 or not values[0] < values[1]:
            raise ConfigError(f"sample: {field}={_shown(dist)} needs LOW < HIGH; accepted: {dist.kind}:LOW:HIGH")
        if dist.kind == "log-uniform" and values[0] <= 0:
            raise ConfigError(f"sample: {field}={_shown(dist)} needs LOW > 0 for a log-uniform distribution")
    for v in values:
        try:
            validate_field(field, float(v))
        except ConfigError as e:
            raise ConfigError(f"sample: {field}={_shown(dist)} can draw a value {field} does not accept: {e}") from None


def parse_specs(grid_specs: list[str], sample_specs: list[str]) -> tuple[dict[str, list[float]], dict[str, Distribution]]:
    """The command line's ``--grid`` and ``--sample`` specs as ``(grid, samples)``; a field given
    twice, or both in the grid and in the random search, is refused (never silently dropped)."""
    grid: dict[str, list[float]] = {}
    samples: dict[str, Distribution] = {}
    for spec in grid_specs:
        field, values = parse_grid(spec)
        if field in grid:
            raise ConfigError(f"grid: {field} is given twice; accepted: one --grid per field, with all its values "
                              f"in it ({field}={','.join(f'{v:g}' for v in grid[field] + values)})")
        grid[field] = values
    for spec in sample_specs:
        field, dist = parse_sample(spec)
        if field in samples:
            raise ConfigError(f"sample: {field} is given twice; accepted: one --sample per field")
        samples[field] = dist
    _check_disjoint(grid, samples)
    return grid, samples


def _check_disjoint(grid: dict[str, list[float]], samples: dict[str, Distribution]) -> None:
    both = sorted(set(grid) & set(samples))
    if both:
        raise ConfigError(f"sample: {', '.join(both)} is both in the grid and in the random search; accepted: each "
                          "field in one of them")


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def make_settings(
    grid: dict[str, list[float]] | None = None,
    samples: dict[str, Distribution] | None = None,
    num_samples: int = 0,
    key: jax.Array | None = None,
) -> list[dict[str, float]]:
    """The cartesian product of ``grid``, crossed with ``num_samples`` random draws of ``samples``.

    Draws use JAX keys, so the same ``key`` gives the same settings on any machine.
    """
    grid = grid or {}
    samples = samples or {}
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    if not samples:
        return combos
    if num_samples <= 0:
        raise ConfigError(f"num_samples: got {num_samples}; accepted: a positive number of random-search samples")
    key = jax.random.key(0) if key is None else key
    draws: list[dict[str, float]] = [{} for _ in range(num_samples)]
    for i, (field, dist) in enumerate(sorted(samples.items())):
        k = jax.random.fold_in(key, i)
        if dist.kind == "choice":
            idx = np.asarray(jax.random.randint(k, (num_samples,), 0, len(dist.values)))
            vals = [dist.values[j] for j in idx]
        elif dist.kind == "uniform":
            vals = np.asarray(jax.random.uniform(k, (num_samples,), minval=dist.values[0], maxval=dist.values[1])).tolist()
        else:
            lo, hi = math.log(dist.values[0]), math.log(dist.values[1])
            vals = np.exp(np.asarray(jax.random.uniform(k, (num_samples,), minval=lo, maxval=hi), np.float64)).tolist()
        for d, v in zip(draws, vals):
            d[field] = float(v)
    return [{**c, **d} for c in combos for d in draws]


def make_plan(
    config: PPOConfig,
    num_seeds: int = 1,
    grid: dict[str, list[float]] | None = None,
    samples: dict[str, Distribution] | None = None,
    num_samples: int = 0,
) -> SweepPlan:
    """Check the sweep and draw its settings: ``num_seeds`` seeds of every setting of ``grid`` x ``samples``.

    Seed keys and random-search draws derive from ``config.seed``.
    """
    if not isinstance(num_seeds, int) or isinstance(num_seeds, bool) or not 0 < num_seeds <= 2**31 - 1:
        raise ConfigError(f"num_seeds: got {num_seeds!r}; accepted: a positive integer up to 2**31 - 1 (int32)")
    grid, samples = grid or {}, samples or {}
    for where, fields in (("grid", grid), ("sample", samples)):
        for field in fields:
            check_sweepable(field, where)
    _check_disjoint(grid, samples)
    for field, values in grid.items():
        if not _all_numbers(values):
            raise ConfigError(f"grid: {field}: got {values!r}; accepted: a list of numbers")
        if len(values) == 0:
            raise ConfigError(f"grid: {field} has an empty list of values; accepted: a list of numbers")
    grid = {field: [float(v) for v in values] for field, values in grid.items()}  # NumPy scalars as Python floats
    for field, dist in samples.items():
        check_distribution(field, dist)
    try:  # an int, or an integer NumPy scalar
        count = None if isinstance(num_samples, bool) else operator.index(num_samples)
    except TypeError:
        count = None
    if count is None or not 0 <= count <= 2**31 - 1:
        raise ConfigError(f"num_samples: got {num_samples!r}; accepted: 0, or a positive number of random-search "
                          "samples with samples")
    num_samples = count
    if samples and num_samples == 0:
        raise ConfigError(f"num_samples: got {num_samples}; accepted: a positive number of random-search samples")
    if num_samples and not samples:
        raise ConfigError(f"num_samples: got {num_samples} without samples to draw from; accepted: samples="
                          "{FIELD: Distribution(...)} with it, or num_samples=0")
    key = jax.random.key(config.seed)
    settings = make_settings(grid, samples, num_samples, jax.random.fold_in(key, 1))
    for setting in settings:
        for field, value in setting.items():
            validate_field(field, value)
    return SweepPlan(settings, num_seeds, jax.random.split(key, num_seeds))


def stack_hparams(config: PPOConfig, plan: SweepPlan) -> HParams:
    """HParams with a leading agent axis ``[A]`` (setting-major), from values already checked."""
    rows = []
    for setting in plan.settings:
        rows.extend([HParams.from_config(config.replace(**setting))] * plan.num_seeds)
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *rows)
