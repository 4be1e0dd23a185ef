"""Running a configuration end to end: compile, train, time, write the results."""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np

from purejaxppo import results
from purejaxppo.config import HParams, PPOConfig
from purejaxppo.train import make_trainer


def run(config: PPOConfig, out_dir: str | None = None, preset_name: str | None = None, log=print) -> dict[str, Any]:
    """Train ``config`` once as one compiled program and write its results to ``out_dir``.

    Returns the summary dictionary (also written as ``summary.json``) with the metrics
    under ``"metrics"``.
    """
    trainer = make_trainer(config)
    key = jax.random.key(config.seed)
    hparams = HParams.from_config(config)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        results.write_json(os.path.join(out_dir, "config.json"), config.to_dict())

    log(
        f"training {config.env}: {config.num_updates} updates x {config.batch_size} env steps "
        f"({config.num_envs} envs x {config.num_steps} steps) on {jax.default_backend()}"
    )
    t0 = time.perf_counter()
    compiled = jax.jit(trainer.train).lower(key, hparams).compile()
    compile_seconds = time.perf_counter() - t0
    log(f"compiled in {compile_seconds:.1f} s")

    t0 = time.perf_counter()
    state, metrics = compiled(key, hparams)
    metrics = jax.device_get(jax.block_until_ready(metrics))
    train_seconds = time.perf_counter() - t0
    env_steps = config.num_updates * config.batch_size
    sps = env_steps / train_seconds
    final = float(results.final_return(metrics))
    log(f"trained {env_steps:,} env steps in {train_seconds:.1f} s ({sps:,.0f} steps/s); final return {final:.2f}")

    summary: dict[str, Any] = {
        "env": config.env,
        "seed": config.seed,
        "preset": preset_name,
        "env_steps": env_steps,
        "num_updates": config.num_updates,
        "final_return": final,
        "compile_seconds": round(compile_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "sps": round(sps, 1),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "versions": results.package_versions(),
    }
    if out_dir is not None:
        rows = results.metrics_rows(config, metrics)
        results.write_metrics_csv(os.path.join(out_dir, "metrics.csv"), rows)
        results.plot_learning_curve(
            os.path.join(out_dir, "learning_curve.png"),
            np.arange(1, config.num_updates + 1) * config.batch_size,
            np.asarray(metrics["charts/episodic_return"], np.float64),
            f"PPO on {config.env} (seed {config.seed})",
        )
        results.write_json(os.path.join(out_dir, "summary.json"), summary)
        log(f"results in {out_dir}")
    summary["metrics"] = metrics
    summary["state"] = state
    return summary
