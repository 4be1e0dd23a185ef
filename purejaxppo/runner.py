"""Running a configuration end to end: compile, train in chunks, log, checkpoint, write results.

Training runs as repeated calls of one compiled *chunk* of K updates (a ``lax.scan`` of the
same ``update`` that the fused ``train`` scans over). The state is donated to each call, so
it is updated in place, and between calls the host streams metrics, draws the progress bar
and saves checkpoints. With K equal to the number of updates this is the fused program.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from purejaxppo import results
from purejaxppo.config import HParams, PPOConfig
from purejaxppo.errors import RunError
from purejaxppo.train import Trainer, make_trainer

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SECONDS = 300.0


def auto_chunk(num_updates: int, chunks: int = 20) -> int:
    """About ``num_updates / chunks`` updates per chunk, preferring a divisor of ``num_updates``
    (then every chunk reuses one executable and no second one is compiled for the remainder)."""
    target = max(1, math.ceil(num_updates / chunks))
    for k in range(target, min(2 * target, num_updates) + 1):
        if num_updates % k == 0:
            return k
    return target


def make_chunk(trainer: Trainer, num_updates: int) -> Callable:
    """``chunk(state, hparams) -> (state, metrics[num_updates])``, jitted with ``state`` donated."""

    def chunk(state, hparams):
        return jax.lax.scan(lambda s, _: trainer.update(s, hparams), state, None, length=num_updates)

    return jax.jit(chunk, donate_argnums=0)


def run(
    config: PPOConfig,
    out_dir: str | None = None,
    preset_name: str | None = None,
    log: Callable[[str], None] = print,
    *,
    chunk_updates: int | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int = 3,
    resume: bool = False,
    progress: bool | None = None,
    tensorboard: bool = False,
    wandb: dict[str, Any] | None = None,
    data_parallel: bool = False,
) -> dict[str, Any]:
    """Train ``config`` and write its results to ``out_dir``; returns the summary.

    Args:
        chunk_updates: updates per compiled chunk (default: the resumed run's, else about 1/20
            of the run).
        checkpoint_every: save a checkpoint after the chunk that reaches each multiple of this
            many updates, and at the end (default: every 5 minutes of training, and at the end;
            0: none). Needs ``out_dir``.
        keep_checkpoints: how many of the latest checkpoints to keep.
        resume: continue from the latest usable checkpoint in ``out_dir``.
        progress: draw a progress bar on stderr (default: only when stderr is a terminal).
        tensorboard: also write TensorBoard event files to ``out_dir/tensorboard``.
        wandb: also log to Weights & Biases: ``{"project": ..., "mode": "offline"|"online"}``.
        data_parallel: split the environments over all devices of this process and average
            the gradients (:mod:`purejaxppo.parallel`); the same as the default on one device.

    The summary (also written as ``summary.json``) holds the metrics under ``"metrics"`` and
    the final :class:`~purejaxppo.train.RunnerState` under ``"state"``.
    """
    from purejaxppo.checkpoints import Checkpointer
    from purejaxppo.loggers import CSVLogger, ProgressBar, TensorBoardLogger, WandbLogger

    mesh = None
    if data_parallel and len(jax.local_devices()) > 1:
        from purejaxppo import parallel

        mesh = parallel.env_mesh(jax.local_devices())
        trainer = parallel.data_parallel_trainer(config, mesh)
    else:
        trainer = make_trainer(config)
    n_updates = config.num_updates
    if out_dir is None and resume:
        raise RunError("resume needs the folder of the run to continue (--out DIR)")
    key = jax.random.key(config.seed)
    hparams = HParams.from_config(config)

    checkpointer = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        if checkpoint_every != 0 or resume:
            checkpointer = Checkpointer(os.path.join(out_dir, CHECKPOINT_DIR), keep=keep_checkpoints)

    # ---------------------------------------------------------------- starting state
    history: dict[str, list[np.ndarray]] = {}
    seconds_before = 0.0
    t0 = time.perf_counter()
    if resume:
        from purejaxppo.checkpoints import CheckpointError

        like = jax.eval_shape(trainer.init, key, hparams)
        try:
            step, state, previous, meta = checkpointer.restore(like, log=log)
        except CheckpointError as e:
            raise RunError(str(e)) from None
        if step > n_updates:
            raise RunError(
                f"the run is already at update {step}, past the {n_updates} updates of total_timesteps="
                f"{config.total_timesteps}; accepted: total_timesteps >= {step * config.batch_size}"
            )
        if mesh is not None:  # the restored arrays go back to their places on the mesh
            state = jax.device_put(state, parallel.state_shardings(mesh, state))
        history = {k: [v] for k, v in previous.items()}
        seconds_before = float(meta.get("train_seconds", 0.0))
        # the same chunks as before, so that the resumed run repeats the same computation
        chunk_updates = chunk_updates or meta.get("chunk_updates")
        log(f"resuming from the checkpoint at update {step} ({step * config.batch_size:,} env steps)")
    else:
        step = 0
        state = jax.jit(trainer.init)(key, hparams)
    if out_dir is not None:
        results.write_json(os.path.join(out_dir, "config.json"), config.to_dict())
    chunk = min(chunk_updates or auto_chunk(n_updates), n_updates)
    # By default a checkpoint is saved after the first chunk that ends CHECKPOINT_SECONDS after
    # the previous one, and at the end: an Orbax save costs about 0.1 s here, too much to pay
    # every few updates of a run that lasts seconds.
    by_time = checkpoint_every is None
    if out_dir is None:
        checkpoint_every = 0

    split = f", environments split over {mesh.devices.size} devices" if mesh is not None else ""
    log(
        f"training {config.env}: {n_updates} updates x {config.batch_size} env steps "
        f"({config.num_envs} envs x {config.num_steps} steps) on {jax.default_backend()}{split}, "
        f"{chunk} updates per chunk"
    )
    compiled = {chunk: make_chunk(trainer, chunk).lower(state, hparams).compile()}
    compile_seconds = time.perf_counter() - t0
    log(f"compiled in {compile_seconds:.1f} s")

    # ---------------------------------------------------------------- loggers
    loggers: list[Any] = []
    total_steps = n_updates * config.batch_size
    if out_dir is not None:
        previous_rows = results.metrics_rows(config, _concat(history)) if history else []
        loggers.append(CSVLogger(os.path.join(out_dir, "metrics.csv"), previous_rows))
        if tensorboard:
            loggers.append(TensorBoardLogger(os.path.join(out_dir, "tensorboard")))
        if wandb is not None:
            name = os.path.basename(os.path.abspath(out_dir))
            loggers.append(WandbLogger(out_dir, wandb.get("project", "purejaxppo"), wandb.get("mode", "offline"),
                                       config.to_dict(), name))
    loggers.append(ProgressBar(total_steps, start_steps=step * config.batch_size, enabled=progress))

    meta = {"config": config.to_dict(), "version": results.package_versions().get("purejaxppo"),
            "chunk_updates": chunk}
    start_step = step
    t_train = time.perf_counter()
    last_saved = step if resume else -1

    last_save_time = time.perf_counter()

    def save(at: int) -> None:
        nonlocal last_saved, last_save_time
        last_save_time = time.perf_counter()
        if checkpointer is not None and at != last_saved:
            elapsed = seconds_before + time.perf_counter() - t_train
            checkpointer.save(at, state, _concat(history),
                              dict(meta, env_steps=at * config.batch_size, train_seconds=elapsed))
            last_saved = at

    try:
        while step < n_updates:
            k = min(chunk, n_updates - step)
            if k not in compiled:  # the last, shorter chunk
                tc = time.perf_counter()
                compiled[k] = make_chunk(trainer, k).lower(state, hparams).compile()
                compile_seconds += time.perf_counter() - tc
                t_train += time.perf_counter() - tc
            state, metrics = compiled[k](state, hparams)
            metrics = jax.device_get(metrics)
            rows = results.metrics_rows(config, metrics, start=step)
            step += k
            for name, v in metrics.items():
                history.setdefault(name, []).append(np.asarray(v))
            for logger in loggers:
                logger.log(rows)
            if by_time:
                if checkpointer is not None and (time.perf_counter() - last_save_time >= CHECKPOINT_SECONDS
                                                 or step == n_updates):
                    save(step)
            elif checkpoint_every and (step // checkpoint_every > (step - k) // checkpoint_every or step == n_updates):
                save(step)
        jax.block_until_ready(state)
        train_seconds = time.perf_counter() - t_train
        if checkpoint_every != 0:
            save(step)
    except KeyboardInterrupt:
        try:
            if checkpoint_every != 0:
                save(step)
        except Exception:  # noqa: BLE001 - the state of an interrupted call may already be gone
            pass
        where = f"; continue with --resume (checkpoint at update {step})" if checkpointer is not None else ""
        log(f"interrupted at update {step}{where}")
        raise
    finally:
        if checkpointer is not None:
            checkpointer.close()
        for logger in loggers:
            logger.close()

    metrics = _concat(history)
    done_steps = (step - start_step) * config.batch_size
    env_steps = step * config.batch_size
    sps = done_steps / train_seconds if done_steps else float("nan")
    final = float(results.final_return(metrics))
    log(
        f"trained {done_steps:,} env steps in {train_seconds:.1f} s ({sps:,.0f} steps/s); "
        f"final return {final:.2f}"
    )
    summary: dict[str, Any] = {
        "env": config.env,
        "seed": config.seed,
        "preset": preset_name,
        "env_steps": env_steps,
        "num_updates": n_updates,
        "final_return": final,
        "compile_seconds": round(compile_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "sps": round(sps, 1),
        "chunk_updates": chunk,
        "resumed_from_update": start_step if resume else None,
        "total_train_seconds": round(seconds_before + train_seconds, 3),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "data_parallel_devices": mesh.devices.size if mesh is not None else 1,
        "versions": results.package_versions(),
    }
    if out_dir is not None:
        results.plot_learning_curve(
            os.path.join(out_dir, "learning_curve.png"),
            np.arange(1, step + 1) * config.batch_size,
            np.asarray(metrics["charts/episodic_return"], np.float64),
            f"PPO on {config.env} (seed {config.seed})",
        )
        results.write_json(os.path.join(out_dir, "summary.json"), summary)
        log(f"results in {out_dir}")
    summary["metrics"] = metrics
    summary["state"] = state
    return summary


def _concat(history: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in history.items()}
