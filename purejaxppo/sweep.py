"""Many agents in one compiled program: seeds x hyperparameter settings, vmapped and sharded.

A sweep trains ``A = G settings x S seeds`` agents with one ``jit`` of
``vmap(train)`` over a flat *agent axis*: agent ``g * S + s`` uses setting ``g`` and the
``s``-th seed key (the same seed keys for every setting, so settings are compared on
common random numbers, and any agent can be reproduced by a single ``train`` call with
its key and hyperparameters). The agent axis is split over all devices of a
``jax.sharding.Mesh`` (one axis named ``"agents"``): each device runs the one-device program
on its block and the results are global arrays sharded as ``P("agents")`` (see
:func:`run_agents`); when the agent count does not divide the device count, the last agent
is repeated to pad and the copies are dropped.

Only the float hyperparameters of :class:`~purejaxppo.config.HParams` can be swept:
they are traced inputs. A static field (one that changes shapes or the program, such as
``num_envs`` or the network widths) is refused with the list of sweepable fields.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxppo.config import HPARAM_FIELDS, ConfigError, HParams, PPOConfig, validate
from purejaxppo.results import final_return
from purejaxppo.train import make_trainer

DISTRIBUTIONS = ("uniform", "log-uniform", "choice")


class Distribution(NamedTuple):
    """A random-search distribution: ``uniform``/``log-uniform`` on ``[low, high]`` or ``choice`` of values."""

    kind: str
    values: tuple[float, ...]  # (low, high) or the choices


class SweepResult(NamedTuple):
    settings: list[dict[str, float]]  # G settings: swept field -> value
    seeds: int  # S
    metrics: dict[str, np.ndarray]  # name -> [G, S, num_updates]
    final_return: np.ndarray  # [G, S]
    auc: np.ndarray  # [G, S] mean episodic return over training
    hparams: HParams  # [G * S] the hyperparameters of every agent
    keys: jax.Array  # [S] seed keys


def check_sweepable(field: str, where: str = "grid") -> None:
    if field in HPARAM_FIELDS:
        return
    static = field in PPOConfig.__dataclass_fields__
    what = "is a static setting (it changes the compiled program)" if static else "is not a config field"
    raise ConfigError(f"{where}: {field} {what}; fields that can be swept: {', '.join(HPARAM_FIELDS)}")


def parse_grid(spec: str) -> tuple[str, list[float]]:
    """``"lr=1e-3,3e-4"`` -> ``("lr", [1e-3, 3e-4])``."""
    field, sep, values = spec.partition("=")
    field = field.strip().replace("-", "_")
    if not sep or not field:
        raise ConfigError(f"grid: {spec!r} is not FIELD=V1,V2,...; for example lr=1e-3,3e-4")
    check_sweepable(field, "grid")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"grid: {field} has an empty list of values; accepted: FIELD=V1,V2,...")
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
    check_sweepable(field, "sample")
    kind, _, rest = dist.partition(":")
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"sample: {field} has distribution {kind!r}; accepted: {', '.join(DISTRIBUTIONS)}")
    parts = [p for p in rest.replace(",", ":").split(":") if p.strip()] if kind == "choice" else rest.split(":")
    if not all(_is_float(p) for p in parts) or not parts:
        raise ConfigError(f"sample: {field}={dist!r} needs numbers; accepted: {kind}:" + ("V1,V2,..." if kind == "choice" else "LOW:HIGH"))
    values = tuple(float(p) for p in parts)
    if kind != "choice":
        if len(values) != 2 or not values[0] < values[1]:
            raise ConfigError(f"sample: {field}={dist!r} needs LOW < HIGH; accepted: {kind}:LOW:HIGH")
        if kind == "log-uniform" and values[0] <= 0:
            raise ConfigError(f"sample: {field}={dist!r} needs LOW > 0 for a log-uniform distribution")
    return field, Distribution(kind, values)


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


def stack_hparams(config: PPOConfig, settings: list[dict[str, float]], num_seeds: int) -> HParams:
    """HParams with a leading agent axis ``[G * S]`` (setting-major)."""
    rows = []
    for s in settings:
        for f, v in s.items():
            check_sweepable(f)
            validate(config.replace(**{f: v}))  # each value must be a valid setting of its field
        rows.extend([HParams.from_config(config.replace(**s))] * num_seeds)
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *rows)


def agent_mesh(devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("agents",))


def run_agents(config: PPOConfig, keys: jax.Array, hparams: HParams, mesh: Mesh | None = None):
    """Train ``A`` agents (``keys [A]``, ``hparams [A]``) in one program per device, over ``mesh``.

    The agent axis is split into equal blocks, one per device of ``mesh`` (padded by
    repeating the last agent; the copies are dropped). Every device runs the *same
    one-device program* (``jit(vmap(train))`` of a block) on its own agents, and the blocks
    are assembled into global arrays sharded as ``NamedSharding(mesh, P("agents"))``.
    Agents never communicate, so no partitioned program is needed; and an SPMD-partitioned
    program is optimised differently by XLA (it rounds some sums differently, about 1e-7
    relative), whereas this way every agent's numbers are bit-identical to a one-device
    sweep. Each process feeds only its own devices, so the same code runs across hosts.

    Returns ``(final states, metrics)``; states are global arrays with the agent axis first
    (padding included), metrics are host NumPy arrays of the ``A`` agents.
    """
    mesh = agent_mesh() if mesh is None else mesh
    n_agents = keys.shape[0]
    n_dev = mesh.devices.size
    padded = -(-n_agents // n_dev) * n_dev
    if padded != n_agents:  # pad by repeating the last agent; the copies are dropped below
        pad = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], padded - n_agents, axis=0)])  # noqa: E731
        keys, hparams = pad(keys), jax.tree_util.tree_map(pad, hparams)
    train_block = jax.jit(jax.vmap(make_trainer(config).train))
    if n_dev == 1:
        states, metrics = train_block(keys, hparams)
    else:
        states, metrics = _train_blocks(train_block, mesh, keys, hparams)
    return states, jax.tree_util.tree_map(lambda x: np.asarray(x)[:n_agents], jax.device_get(metrics))


def _train_blocks(train_block, mesh: Mesh, keys: jax.Array, hparams: HParams):
    """Run ``train_block`` on every device of ``mesh`` with its block of the (padded) agents."""
    devices = list(mesh.devices.flat)
    padded = keys.shape[0]
    # The agent list is computed the same way in every process, so each one can cut out
    # the blocks of its own (addressable) devices from the host values.
    per = padded // len(devices)
    key_data = np.asarray(jax.random.key_data(keys))
    host_hparams = jax.tree_util.tree_map(np.asarray, hparams)
    local = [(i, d) for i, d in enumerate(devices) if d.process_index == jax.process_index()]

    def block_args(i, device):
        cut = lambda x: jax.device_put(x[i * per:(i + 1) * per], device)  # noqa: E731
        return jax.random.wrap_key_data(cut(key_data)), jax.tree_util.tree_map(cut, host_hparams)

    args = [block_args(i, d) for i, d in local]
    # One executable per device (the program is the same; XLA binds an executable to its
    # device). The first is compiled alone, so that where the persistent compilation cache
    # ignores the device (GPUs) the others are loaded from it; the rest compile in parallel
    # threads. Calls dispatch asynchronously, so the devices train at the same time.
    from concurrent.futures import ThreadPoolExecutor

    compiled = [train_block.lower(*args[0]).compile()]
    with ThreadPoolExecutor(max_workers=max(1, len(local) - 1)) as pool:
        compiled += list(pool.map(lambda a: train_block.lower(*a).compile(), args[1:]))
    outs = [c(*a) for c, a in zip(compiled, args)]

    sharding = NamedSharding(mesh, PartitionSpec("agents"))

    def to_global(*blocks):
        return jax.make_array_from_single_device_arrays((padded,) + blocks[0].shape[1:], sharding, list(blocks))

    states, metrics = jax.tree_util.tree_map(to_global, *outs)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        metrics = multihost_utils.process_allgather(metrics, tiled=True)  # every process gets every agent
    return states, metrics


def sweep(
    config: PPOConfig,
    num_seeds: int = 1,
    grid: dict[str, list[float]] | None = None,
    samples: dict[str, Distribution] | None = None,
    num_samples: int = 0,
    mesh: Mesh | None = None,
) -> SweepResult:
    """Train ``num_seeds`` seeds of every setting of ``grid`` x ``samples`` in one compiled program.

    Example:
        >>> from purejaxppo import PPOConfig
        >>> from purejaxppo.sweep import sweep
        >>> r = sweep(PPOConfig(total_timesteps=4096), num_seeds=2, grid={"lr": [1e-3, 3e-4]})
        >>> r.final_return.shape
        (2, 2)
    """
    validate(config)
    if not isinstance(num_seeds, int) or num_seeds <= 0:
        raise ConfigError(f"num_seeds: got {num_seeds!r}; accepted: a positive integer")
    for f in list(grid or {}) + list(samples or {}):
        check_sweepable(f)
    settings = make_settings(grid, samples, num_samples, jax.random.fold_in(jax.random.key(config.seed), 1))
    seed_keys = jax.random.split(jax.random.key(config.seed), num_seeds)
    keys = jnp.concatenate([seed_keys] * len(settings))
    hparams = stack_hparams(config, settings, num_seeds)
    _, metrics = run_agents(config, keys, hparams, mesh)
    shaped = {k: v.reshape((len(settings), num_seeds) + v.shape[1:]) for k, v in metrics.items()}
    returns = shaped["charts/episodic_return"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an agent with no finished episode has no AUC
        auc = np.nanmean(returns, axis=-1)
    return SweepResult(settings, num_seeds, shaped, np.asarray(final_return(shaped)), auc, hparams, seed_keys)


def bootstrap_ci(values: np.ndarray, key: int = 0, n: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped)."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(key)
    means = rng.choice(v, size=(n, v.size), replace=True).mean(axis=1)
    lo, hi = np.percentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def summarize(result: SweepResult) -> list[dict[str, Any]]:
    """One row per setting, best mean final return first."""
    rows = []
    for g, setting in enumerate(result.settings):
        finals = result.final_return[g]
        lo, hi = bootstrap_ci(finals, key=g)
        rows.append(
            {
                **setting,
                "mean_final_return": float(np.nanmean(finals)) if np.any(~np.isnan(finals)) else float("nan"),
                "std_final_return": float(np.nanstd(finals)) if np.any(~np.isnan(finals)) else float("nan"),
                "ci95_low": lo,
                "ci95_high": hi,
                "mean_auc": float(np.nanmean(result.auc[g])),
                "seeds": result.seeds,
                "setting": g,
            }
        )
    return sorted(rows, key=lambda r: (-np.nan_to_num(r["mean_final_return"], nan=-np.inf), r["setting"]))


def write_sweep(out_dir: str, config: PPOConfig, result: SweepResult, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Write results.csv, summary.csv, curves.png, config.json and metrics.npz; return the summary rows."""
    import csv
    import os

    from purejaxppo import results as res

    os.makedirs(out_dir, exist_ok=True)
    res.write_json(os.path.join(out_dir, "config.json"), {**config.to_dict(), "sweep": spec})
    fields = sorted({f for s in result.settings for f in s})
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "setting", *fields, "seed", "final_return", "auc"])
        for g, setting in enumerate(result.settings):
            for s in range(result.seeds):
                w.writerow([g * result.seeds + s, g, *[setting.get(k, "") for k in fields], s,
                            _fmt(result.final_return[g, s]), _fmt(result.auc[g, s])])
    rows = summarize(result)
    cols = ["rank", "setting", *fields, "mean_final_return", "std_final_return", "ci95_low", "ci95_high", "mean_auc", "seeds"]
    with open(os.path.join(out_dir, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for rank, r in enumerate(rows, 1):
            w.writerow([rank, *[_fmt(r.get(c, "")) for c in cols[1:]]])
    env_steps = np.arange(1, config.num_updates + 1) * config.batch_size
    np.savez_compressed(
        os.path.join(out_dir, "metrics.npz"),
        env_steps=env_steps,
        **{k.replace("/", "__"): v for k, v in result.metrics.items()},
    )
    _plot_curves(os.path.join(out_dir, "curves.png"), env_steps, result, config.env)
    return rows


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else float(v)
    return v


def format_table(rows: list[dict[str, Any]]) -> str:
    fields = sorted({k for r in rows for k in r} - {"mean_final_return", "std_final_return", "ci95_low", "ci95_high", "mean_auc", "seeds", "setting"})
    head = ["rank", *fields, "final return", "std", "95% CI", "AUC"]
    lines = []
    for rank, r in enumerate(rows, 1):
        lines.append([str(rank), *[f"{r[f]:.4g}" for f in fields], f"{r['mean_final_return']:.1f}", f"{r['std_final_return']:.1f}",
                      f"[{r['ci95_low']:.1f}, {r['ci95_high']:.1f}]", f"{r['mean_auc']:.1f}"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), *map(fmt, lines)])


def _plot_curves(path: str, env_steps: np.ndarray, result: SweepResult, env: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    returns = result.metrics["charts/episodic_return"]  # [G, S, U]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g, setting in enumerate(result.settings):
        r = returns[g]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(r, axis=0)
            if result.seeds > 1:
                # pointwise 95% interval of the mean over seeds (normal approximation)
                half = 1.96 * np.nanstd(r, axis=0) / np.sqrt(np.sum(~np.isnan(r), axis=0).clip(1))
        label = ", ".join(f"{k}={v:.3g}" for k, v in setting.items()) or "default"
        line = ax.plot(env_steps, mean, lw=1.4, label=label)[0]
        if result.seeds > 1:
            ax.fill_between(env_steps, mean - half, mean + half, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episodic return")
    ax.set_title(f"{env}: mean over {result.seeds} seed(s)")
    if len(result.settings) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
