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

from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.metrics import final_return
from purejaxppo.core.train import Trainer, make_trainer
from purejaxppo.errors import CheckpointError, RunError
from purejaxppo.run import layout, results
from purejaxppo.run.checkpoints import Checkpointer

CHECKPOINT_SECONDS = 300.0

Log = Callable[[str], None]


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


def build_trainer(config: PPOConfig, data_parallel: bool = False) -> Trainer:
    """The trainer of a run: data-parallel over this process's devices when asked and there are several."""
    if data_parallel and len(jax.local_devices()) > 1:
        from purejaxppo.scale import parallel

        return parallel.data_parallel_trainer(config, parallel.env_mesh(jax.local_devices()))
    return make_trainer(config)


class Saver:
    """Saves checkpoints after the chunks that reach each multiple of ``every`` updates, or, with
    ``every=None``, after the first chunk that ends ``CHECKPOINT_SECONDS`` after the previous save
    (an Orbax save costs about 0.1 s, too much to pay every few updates of a short run); and at the end."""

    def __init__(self, checkpointer: Checkpointer, every: int | None, meta: dict[str, Any], batch_size: int,
                 last_saved: int | None):
        self.checkpointer, self.every, self.meta, self.batch_size = checkpointer, every, meta, batch_size
        self.last_saved, self.last_time = last_saved, time.perf_counter()

    def due(self, step: int, previous: int, final: bool) -> bool:
        if final:
            return True
        if self.every is None:
            return time.perf_counter() - self.last_time >= CHECKPOINT_SECONDS
        return step // self.every > previous // self.every

    def save(self, step: int, state: Any, history: dict[str, np.ndarray], train_seconds: float) -> None:
        self.last_time = time.perf_counter()
        if step != self.last_saved:
            meta = dict(self.meta, env_steps=step * self.batch_size, train_seconds=train_seconds)
            self.checkpointer.save(step, state, history, meta)
            self.last_saved = step


def restore(trainer: Trainer, checkpointer: Checkpointer, log: Log):
    """``(step, state, history, meta)`` of the latest usable checkpoint, placed as the trainer needs."""
    config = trainer.config
    like = jax.eval_shape(trainer.init, jax.random.key(config.seed), HParams.from_config(config))
    try:
        step, state, history, meta = checkpointer.restore(like, log=log)
    except CheckpointError as e:
        raise RunError(str(e)) from None
    if step > config.num_updates:
        raise RunError(
            f"the run is already at update {step}, past the {config.num_updates} updates of total_timesteps="
            f"{config.total_timesteps}; accepted: total_timesteps >= {step * config.batch_size}"
        )
    if trainer.mesh is not None:  # the restored arrays go back to their places on the mesh
        from purejaxppo.scale import parallel

        state = jax.device_put(state, parallel.state_shardings(trainer.mesh, state))
    log(f"resuming from the checkpoint at update {step} ({step * config.batch_size:,} env steps)")
    return step, state, history, meta


def make_loggers(config: PPOConfig, out_dir: str | None, history: dict[str, np.ndarray], start_step: int,
                 progress: bool | None, tensorboard: bool, wandb: dict[str, Any] | None) -> list[Any]:
    """metrics.csv (with the rows of a resumed run first), TensorBoard, W&B, and the progress bar."""
    from purejaxppo.run.loggers import CSVLogger, ProgressBar, TensorBoardLogger, WandbLogger

    loggers: list[Any] = []
    if out_dir is not None:
        previous = results.metrics_rows(config, history) if history else []
        loggers.append(CSVLogger(os.path.join(out_dir, layout.METRICS), previous))
        if tensorboard:
            loggers.append(TensorBoardLogger(os.path.join(out_dir, layout.TENSORBOARD)))
        if wandb is not None:
            name = os.path.basename(os.path.abspath(out_dir))
            loggers.append(WandbLogger(out_dir, wandb.get("project", "purejaxppo"), wandb.get("mode", "offline"),
                                       config.to_dict(), name))
    total = config.num_updates * config.batch_size
    loggers.append(ProgressBar(total, start_steps=start_step * config.batch_size, enabled=progress))
    return loggers


def run(
    config: PPOConfig | Trainer,
    out_dir: str | None = None,
    preset_name: str | None = None,
    log: Log = print,
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
    """Train ``config`` (or a trainer already built) and write its results to ``out_dir``; returns the summary.

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
            the gradients (:mod:`purejaxppo.scale.parallel`); the same as the default on one device.

    The summary (also written as ``summary.json``) holds the metrics under ``"metrics"`` and
    the final :class:`~purejaxppo.core.state.RunnerState` under ``"state"``.
    """
    trainer = config if isinstance(config, Trainer) else build_trainer(config, data_parallel)
    config = trainer.config
    if out_dir is None and resume:
        raise RunError("resume needs the folder of the run to continue (--out DIR)")
    checkpointer = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        if checkpoint_every != 0 or resume:
            checkpointer = Checkpointer(os.path.join(out_dir, layout.CHECKPOINTS), keep=keep_checkpoints)
    try:
        return _run(trainer, out_dir, preset_name, log, checkpointer, chunk_updates, checkpoint_every, resume,
                    progress, tensorboard, wandb)
    finally:
        if checkpointer is not None:
            checkpointer.close()


def _run(trainer, out_dir, preset_name, log, checkpointer, chunk_updates, checkpoint_every, resume, progress,
         tensorboard, wandb) -> dict[str, Any]:
    config, hparams = trainer.config, HParams.from_config(trainer.config)
    t0 = time.perf_counter()
    history: dict[str, list[np.ndarray]] = {}
    seconds_before = 0.0
    if resume:
        step, state, previous, meta = restore(trainer, checkpointer, log)
        history = {k: [v] for k, v in previous.items()}
        seconds_before = float(meta.get("train_seconds", 0.0))
        # the same chunks as before, so that the resumed run repeats the same computation
        chunk_updates = chunk_updates or meta.get("chunk_updates")
    else:
        step, state = 0, jax.jit(trainer.init)(jax.random.key(config.seed), hparams)
    if out_dir is not None:
        layout.write_config(out_dir, config)
    chunk = min(chunk_updates or auto_chunk(config.num_updates), config.num_updates)
    split = f", environments split over {trainer.mesh.devices.size} devices" if trainer.mesh is not None else ""
    log(f"training {config.env}: {config.num_updates} updates x {config.batch_size} env steps "
        f"({config.num_envs} envs x {config.num_steps} steps) on {jax.default_backend()}{split}, "
        f"{chunk} updates per chunk")
    compiled = {chunk: make_chunk(trainer, chunk).lower(state, hparams).compile()}
    compile_seconds = time.perf_counter() - t0
    log(f"compiled in {compile_seconds:.1f} s")

    saver = None
    if checkpointer is not None and checkpoint_every != 0:
        meta = {"config": config.to_dict(), "version": results.package_versions().get("purejaxppo"),
                "chunk_updates": chunk}
        saver = Saver(checkpointer, checkpoint_every, meta, config.batch_size, step if resume else None)
    loggers = make_loggers(config, out_dir, _concat(history), step, progress, tensorboard, wandb)
    start_step = step
    try:
        step, state, train_seconds, extra_compile = _train_chunks(
            trainer, hparams, state, step, chunk, compiled, history, loggers, saver, seconds_before, log)
    finally:
        for logger in loggers:
            logger.close()
    summary = {"env": config.env, "seed": config.seed, "preset": preset_name,
               "compile_seconds": round(compile_seconds + extra_compile, 3),
               "resumed_from_update": start_step if resume else None,
               "total_train_seconds": round(seconds_before + train_seconds, 3),
               "data_parallel_devices": trainer.mesh.devices.size if trainer.mesh is not None else 1}
    return _finish(config, out_dir, state, _concat(history), step, start_step, train_seconds, chunk, summary, log)


def _train_chunks(trainer, hparams, state, step, chunk, compiled, history, loggers, saver, seconds_before, log):
    """The loop over chunks; returns ``(step, state, train seconds, compile seconds of a last short chunk)``."""
    config = trainer.config
    n_updates = config.num_updates
    t_train = time.perf_counter()
    extra_compile = 0.0

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - t_train

    try:
        while step < n_updates:
            k = min(chunk, n_updates - step)
            if k not in compiled:  # the last, shorter chunk
                tc = time.perf_counter()
                compiled[k] = make_chunk(trainer, k).lower(state, hparams).compile()
                extra_compile += time.perf_counter() - tc
                t_train += time.perf_counter() - tc
            state, metrics = compiled[k](state, hparams)
            metrics = jax.device_get(metrics)
            rows = results.metrics_rows(config, metrics, start=step)
            step += k
            for name, v in metrics.items():
                history.setdefault(name, []).append(np.asarray(v))
            for logger in loggers:
                logger.log(rows)
            if saver is not None and saver.due(step, step - k, step == n_updates):
                saver.save(step, state, _concat(history), elapsed())
        jax.block_until_ready(state)
        train_seconds = time.perf_counter() - t_train
        if saver is not None:
            saver.save(step, state, _concat(history), elapsed())
    except KeyboardInterrupt:
        if saver is not None:
            try:
                saver.save(step, state, _concat(history), elapsed())
            except Exception:  # noqa: BLE001 - the state of an interrupted call may already be gone
                pass
        where = f"; continue with --resume (checkpoint at update {step})" if saver is not None else ""
        log(f"interrupted at update {step}{where}")
        raise
    return step, state, train_seconds, extra_compile


def _finish(config, out_dir, state, metrics, step, start_step, train_seconds, chunk, summary, log) -> dict[str, Any]:
    """Print the result line; write summary.json and the learning curve; return the summary."""
    done_steps = (step - start_step) * config.batch_size
    sps = done_steps / train_seconds if done_steps else float("nan")
    final = float(final_return(metrics))
    log(f"trained {done_steps:,} env steps in {train_seconds:.1f} s ({sps:,.0f} steps/s); final return {final:.2f}")
    summary = {
        "env": summary["env"], "seed": summary["seed"], "preset": summary["preset"],
        "env_steps": step * config.batch_size, "num_updates": config.num_updates, "final_return": final,
        "compile_seconds": summary["compile_seconds"], "train_seconds": round(train_seconds, 3),
        "sps": round(sps, 1), "chunk_updates": chunk, "resumed_from_update": summary["resumed_from_update"],
        "total_train_seconds": summary["total_train_seconds"], "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind), "data_parallel_devices": summary["data_parallel_devices"],
        "versions": results.package_versions(),
    }
    if out_dir is not None:
        results.plot_learning_curve(
            os.path.join(out_dir, layout.CURVE),
            np.arange(1, step + 1) * config.batch_size,
            np.asarray(metrics["charts/episodic_return"], np.float64),
            f"PPO on {config.env} (seed {config.seed})",
        )
        layout.write_json(os.path.join(out_dir, layout.SUMMARY), summary)
        log(f"results in {out_dir}")
    summary["metrics"] = metrics
    summary["state"] = state
    return summary


def _concat(history: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in history.items()}
