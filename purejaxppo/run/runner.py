"""Running a configuration end to end: compile, train in chunks, log, checkpoint, write results.

Training runs as repeated calls of one compiled *chunk* of K updates (a ``lax.scan`` of the
same ``update`` that the fused ``train`` scans over). The state is donated to each call, so
it is updated in place, and between calls the host streams metrics, draws the progress bar
and saves checkpoints. With K equal to the number of updates this is the fused program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from purejaxppo.core.config import SAFE_RESUME_FIELDS, HParams, PPOConfig
from purejaxppo.core.metrics import final_return, first_non_finite
from purejaxppo.core.state import finite_state
from purejaxppo.core.train import Trainer
from purejaxppo.errors import CheckpointError, ConfigError, Diverged, Interrupted, ResumeRefused, RunError
from purejaxppo.run import compile_times, layout, results
from purejaxppo.run.checkpoints import DAMAGED, FROM_ZERO, Checkpointer
from purejaxppo.run.compiled import auto_chunk, build_trainer, init_shapes, make_chunk, make_programs, placed
from purejaxppo.run.options import RunOptions
from purejaxppo.run.programs import Programs
from purejaxppo.run.signals import StopSignals

CHECKPOINT_SECONDS = 300.0

Log = Callable[[str], None]


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


def restore(trainer: Trainer, checkpointer: Checkpointer, log: Log, programs: Programs | None = None):
    """``(step, state, history, meta)`` of the latest usable checkpoint, placed as the trainer needs;
    ``(0, None, {}, {})`` when the run saved none yet (it starts again from update 0). The
    initial state's shapes come from the saved ``init`` program in ``programs`` when there is one."""
    config = trainer.config
    like = init_shapes(trainer, programs or Programs(None))
    if not checkpointer.steps():
        if checkpointer.damaged():  # it saved some, all found damaged: starting again would replace its metrics
            raise RunError(f"every checkpoint of the run in {checkpointer.directory} is damaged (moved to "
                           f"{DAMAGED}/: {', '.join(checkpointer.damaged())}); nothing to resume from; {FROM_ZERO}")
        log("the run saved no checkpoint yet: starting from update 0")
        return 0, None, {}, {}
    check_checkpoint_config(checkpointer, config)
    try:
        step, state, history, meta = checkpointer.restore(like, log=log)
    except CheckpointError as e:
        raise RunError(str(e)) from None
    if step > config.num_updates:
        raise RunError(
            f"the run is already at update {step}, past the {config.num_updates} updates of total_timesteps="
            f"{config.total_timesteps}; accepted: total_timesteps >= {step * config.batch_size}"
        )
    state = placed(trainer, state)  # back to their places on the device or the mesh
    log(f"resuming from the checkpoint at update {step} ({step * config.batch_size:,} env steps)")
    return step, state, history, meta


def make_loggers(config: PPOConfig, out_dir: str | None, history: dict[str, np.ndarray], start_step: int,
                 progress: bool | None, tensorboard: bool, wandb: dict[str, Any] | None) -> list[Any]:
    """metrics.csv (with the rows of a resumed run first), TensorBoard, W&B, and the progress bar."""
    from purejaxppo.run.loggers import CSVLogger, ProgressBar, TensorBoardLogger, WandbLogger

    loggers: list[Any] = []
    if out_dir is not None:
        previous = results.metrics_rows(config, history) if history else []
        loggers.append(CSVLogger(os.path.join(out_dir, layout.METRICS), previous, results.csv_columns(config)))
        if tensorboard:
            loggers.append(TensorBoardLogger(os.path.join(out_dir, layout.TENSORBOARD)))
        if wandb is not None:
            name = os.path.basename(os.path.abspath(out_dir))
            loggers.append(WandbLogger(out_dir, wandb.get("project", "purejaxppo"), wandb.get("mode", "offline"),
                                       config.to_dict(), name))
    total = config.num_updates * config.batch_size
    loggers.append(ProgressBar(total, start_steps=start_step * config.batch_size, enabled=progress))
    return loggers


def _run_without_folder(config, asked: RunOptions, preset_name, log: Log, data_parallel: bool, progress,
                        program_cache, init_from) -> dict[str, Any]:
    """A run that writes no files (``out_dir`` None): no checkpoints, the summary returned."""
    trainer = config if isinstance(config, Trainer) else build_trainer(config, data_parallel)
    options = dataclasses.replace(asked, checkpoint_every=0)
    with StopSignals() as stop:
        return _run(trainer, None, preset_name, log, None, options, False, progress, stop,
                    make_programs(trainer, program_cache), init_from)


def run(
    config: PPOConfig | Trainer,
    out_dir: str | None = None,
    preset_name: str | None = None,
    log: Log = print,
    *,
    chunk_updates: int | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    tensorboard: bool | None = None,
    wandb: dict[str, Any] | bool | None = None,
    data_parallel: bool = False,
    stop_at_return: float | None = None,
    program_cache: str | None = None,
    init_from: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Train ``config`` (or a trainer already built) and write its results to ``out_dir``; returns the summary.

    Args:
        chunk_updates, checkpoint_every, keep_checkpoints, tensorboard, wandb, data_parallel, stop_at_return:
            how the run is managed, each described on :class:`~purejaxppo.run.options.RunOptions`
            (None or False: the default; ``summary["stopped_at_return"]`` records a target's stop).
            On resume, None keeps the run's own (``run.json``); ``tensorboard=False`` and
            ``wandb=False`` turn a logger the run had off.
        resume: continue from the latest usable checkpoint in ``out_dir`` (a folder without a
            run starts one). ``config`` must be the run's own, except for ``total_timesteps``
            (:func:`check_resumable`). The run-management options and the preset name default
            to the run's own, saved in ``run.json``. Resuming a finished run changes nothing.
        overwrite: replace the results of a previous run in ``out_dir``.
        progress: draw a progress bar on stderr (default: only when stderr is a terminal).
        program_cache: a folder of saved traced programs (:mod:`purejaxppo.run.programs`):
            a later launch of the same run skips tracing and lowering. Only for trainers that
            :func:`~purejaxppo.run.compiled.build_trainer` made from their config (the command
            line passes the ``programs`` folder of its compilation cache); the key does not
            cover functions of one's own.
        init_from: ``(sweep folder, agent index)``: start from that sweep agent's learned state
            (parameters, optimiser state, normalisers, KL coefficient;
            :func:`~purejaxppo.run.sweep_agents.seeded_state`) in fresh environments, instead of
            from a fresh initialisation. Saved in ``run.json``, so a resume before the first
            checkpoint starts from it again.

    While it runs, ``out_dir`` is locked (a second writer is refused); SIGINT or SIGTERM stop it at
    the end of the current chunk with a consistent checkpoint (:class:`~purejaxppo.errors.Interrupted`);
    non-finite losses, parameters or returns stop it at the end of that chunk without saving the
    non-finite state (:class:`~purejaxppo.errors.Diverged`; ``summary.json`` records where).

    The summary (also written as ``summary.json``) holds the metrics under ``"metrics"`` and
    the final :class:`~purejaxppo.core.state.RunnerState` under ``"state"``.
    """
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise ConfigError(f"out_dir: got {out_dir!r}; accepted: a folder path, or None")
    given = {"chunk_updates": chunk_updates, "checkpoint_every": checkpoint_every,
             "keep_checkpoints": keep_checkpoints, "tensorboard": tensorboard, "wandb": wandb,
             "data_parallel": data_parallel or None, "stop_at_return": stop_at_return}
    asked = RunOptions.resolve(given)  # checks each option before anything runs
    if init_from is not None and not (isinstance(init_from, (tuple, list)) and len(init_from) == 2
                                      and isinstance(init_from[0], (str, os.PathLike))):
        raise ConfigError(f"init_from: got {init_from!r}; accepted: (sweep folder, agent index), or None")
    if out_dir is None:
        if resume:
            raise RunError("resume needs the folder of the run to continue (--out DIR)")
        return _run_without_folder(config, asked, preset_name, log, data_parallel, progress, program_cache, init_from)
    with layout.locked(out_dir):
        return _run_in_folder(config, out_dir, preset_name, log, given, resume, overwrite, progress, program_cache,
                              init_from)


def _run_in_folder(config, out_dir, preset_name, log, given, resume, overwrite, progress, program_cache, init_from):
    """:func:`run` with a folder, which the caller holds locked: the saved run's options and
    preset under the given ones when resuming, a finished run left as it is, the checkpoints."""
    from purejaxppo.run.loggers import check_extras

    saved: dict[str, Any] = {}
    if resume:
        saved = layout.read_run_settings(out_dir)
        preset_name = preset_name or saved.get("preset")
        init_from = init_from or (tuple(saved["init_from"]) if saved.get("init_from") else None)
    options = RunOptions.resolve(given, saved)
    check_extras(options.tensorboard, options.wandb is not None)  # before anything is removed or compiled
    if not resume:
        layout.check_out_dir(out_dir, overwrite)
        if overwrite:
            layout.clear_run(out_dir)
    trainer = config if isinstance(config, Trainer) else build_trainer(config, options.data_parallel)
    if resume and os.path.exists(os.path.join(out_dir, layout.CONFIG)):
        check_resumable(layout.read_config(out_dir), trainer.config)
    finished = _finished_summary(trainer.config, out_dir, options.stop_at_return) if resume else None
    if finished is not None:
        return _already_finished(trainer.config, out_dir, finished, log)
    checkpointer = None
    if options.checkpoint_every != 0 or resume:
        checkpointer = _checkpointer(out_dir, options.keep_checkpoints)
    try:
        with StopSignals() as stop:
            return _run(trainer, out_dir, preset_name, log, checkpointer, options, resume, progress, stop,
                        make_programs(trainer, program_cache), init_from)
    finally:
        if checkpointer is not None:
            checkpointer.close()


def resume_changes(saved: PPOConfig, config: PPOConfig) -> dict[str, tuple[Any, Any]]:
    """The fields in which ``config`` differs from the run's ``saved`` one: ``name -> (run's, now)``."""
    return {f.name: (getattr(saved, f.name), getattr(config, f.name)) for f in dataclasses.fields(PPOConfig)
            if getattr(config, f.name) != getattr(saved, f.name)}


def check_resumable(saved: PPOConfig, config: PPOConfig, allow_safe_changes: bool = True) -> None:
    """A resume continues the run it finds: a config that differs from the run's saved one in
    anything but :data:`SAFE_RESUME_FIELDS` (or, without ``allow_safe_changes``, in anything) is
    refused with :class:`~purejaxppo.errors.ResumeRefused` (its checkpoints would not fit, or the
    run would silently become another)."""
    changes = resume_changes(saved, config)
    unsafe = [name for name in changes if name not in SAFE_RESUME_FIELDS]
    if unsafe or (changes and not allow_safe_changes):
        listed = ", ".join(f"{c} (run: {changes[c][0]}, now: {changes[c][1]})" for c in unsafe or changes)
        raise ResumeRefused(f"resume: the config differs from the run's: {listed}; accepted: the run's own config "
                            f"(only {', '.join(SAFE_RESUME_FIELDS)} may change on resume)", changes, unsafe)


def check_checkpoint_config(checkpointer: Checkpointer, config: PPOConfig) -> None:
    """Each checkpoint carries the config it was made with: a resume whose config (the run's
    config.json, or the one given) differs from theirs in anything but :data:`SAFE_RESUME_FIELDS`
    is refused in one line, before any checkpoint is read or moved (an edited config.json, or a
    checkpoint copied from another run, would make the run silently another, or its state not fit)."""
    for step in reversed(checkpointer.steps()):
        meta = checkpointer.meta(step)
        if meta is None or not isinstance(meta.get("config"), dict):
            continue  # unreadable: the restore reports it; older checkpoints may still say
        try:
            saved = PPOConfig.from_dict(meta["config"])
        except (TypeError, ValueError):
            continue
        unsafe = {name: change for name, change in resume_changes(saved, config).items()
                  if name not in SAFE_RESUME_FIELDS}
        if unsafe:
            listed = ", ".join(f"{name} (checkpoint: {was}, now: {now})" for name, (was, now) in unsafe.items())
            raise RunError(f"resume: the checkpoint at update {step} was made with another config than the run's "
                           f"config.json (or the one given): {listed}; the checkpoints are left as they are; "
                           "accepted: the config the run was trained with")


def _checkpointer(out_dir: str, keep: int) -> Checkpointer:
    try:
        return Checkpointer(os.path.join(out_dir, layout.CHECKPOINTS), keep=keep)
    except OSError as e:
        raise RunError(f"cannot make the checkpoint folder in {out_dir}: {e.strerror or e}") from None


def _finished_summary(config: PPOConfig, out_dir: str, stop_at_return: float | None) -> dict[str, Any] | None:
    """The summary of a run in ``out_dir`` that completed ``config``'s updates, or stopped at a
    target return that ``stop_at_return`` still accepts, without diverging; else None."""
    path = os.path.join(out_dir, layout.SUMMARY)
    if not os.path.exists(path):
        return None
    summary = layout.read_json(path, "the run's summary")
    final = summary.get("final_return")
    at_target = (summary.get("stopped_at_return") and stop_at_return is not None
                 and isinstance(final, (int, float)) and final >= stop_at_return)
    done = summary.get("env_steps") == config.num_updates * config.batch_size or at_target
    return summary if done and not summary.get("diverged") else None


def _already_finished(config: PPOConfig, out_dir: str, summary: dict[str, Any], log: Log) -> dict[str, Any]:
    final = summary.get("final_return")
    shown = f"{final:.2f}" if isinstance(final, (int, float)) else "none"
    target = summary.get("stopped_at_return")
    updates = (f"stopped at its target return {target['target']:g} after update {target['update']}" if target
               else f"{config.num_updates} updates")
    log(f"the run in {out_dir} is already complete ({updates}, {summary['env_steps']:,} env "
        f"steps, final return {shown}); nothing to do (to train longer: --total-timesteps N --allow-safe-changes)")
    return summary


def _run(trainer, out_dir, preset_name, log, checkpointer, options: RunOptions, resume, progress, stop,
         programs: Programs, init_from=None) -> dict[str, Any]:
    t0 = time.perf_counter()
    start = _start(trainer, checkpointer, log, options, resume, programs, init_from)
    options = dataclasses.replace(options, chunk_updates=start.chunk)
    if out_dir is not None:
        # run.json first: a folder with config.json (what --resume looks for) also has run.json
        seeded = {"init_from": [os.fspath(init_from[0]), int(init_from[1])]} if init_from else {}
        layout.write_run_settings(out_dir, dict(options.to_dict(), preset=preset_name, **seeded))
        layout.write_config(out_dir, trainer.config)
    entry = compile_times.program_id(f"chunk{start.chunk}", trainer.config, trainer.tuning)
    compiling = compile_times.compiling_line("the training program", entry)
    compiled = _compile_chunk(trainer, start, programs, log, compiling)
    compile_seconds = time.perf_counter() - t0
    compile_times.remember(entry, compile_seconds)
    log(f"compiled in {compile_seconds:.1f} s{programs.loaded_note()}")
    loop, step, state = _train_chunks(trainer, out_dir, checkpointer, options, start, compiled, progress, stop,
                                      programs, log)
    summary = _finish(trainer, out_dir, state, _concat(loop.history), step, start.step, loop.train_seconds,
                      start.chunk, {"preset": preset_name, "resumed_from_update": start.step if resume else None,
                                    "compile_seconds": round(compile_seconds + loop.extra_compile, 3),
                                    "total_train_seconds": round(loop.elapsed(), 3), "diverged": loop.diverged,
                                    "stopped_at_return": loop.reached}, log)
    if loop.stop.signum is not None and loop.diverged is None:  # it came during the last chunk or the writing
        log(f"{signal.Signals(loop.stop.signum).name} came after the last update: the run is complete and its "
            "results are written")
    if loop.diverged is not None:
        _diverged(loop, step, summary)
    return summary


class _Start(NamedTuple):
    """Where a run starts: a fresh state at update 0, or a restored checkpoint's."""

    step: int
    state: Any
    history: dict[str, list[np.ndarray]]
    seconds_before: float  # training time of the run before this launch
    chunk: int  # updates per chunk
    resumed: bool


def _start(trainer, checkpointer, log, options: RunOptions, resume: bool, programs: Programs,
           init_from=None) -> _Start:
    """The state to train from (restored when resuming, else fresh, or seeded by a sweep's agent)
    and the chunk size: a resumed run keeps the chunks it saved, so that it repeats the same
    computation."""
    config, hparams = trainer.config, HParams.from_config(trainer.config)
    step, state, history, seconds_before, chunk = 0, None, {}, 0.0, options.chunk_updates
    if resume:
        step, state, previous, meta = restore(trainer, checkpointer, log, programs)
        history = {k: [v] for k, v in previous.items()}
        seconds_before = float(meta.get("train_seconds", 0.0))
        chunk = chunk or meta.get("chunk_updates")
    if state is None:
        key = jax.random.key(config.seed)
        state = programs.compile("init", trainer.init, (key, hparams))(key, hparams)
        if init_from is not None:
            from purejaxppo.run.sweep_agents import load_agent, seeded_state

            agent_state = load_agent(init_from[0], init_from[1])[3]
            state = seeded_state(state, agent_state)
            log(f"starting from agent {init_from[1]} of the sweep in {init_from[0]}")
        state = placed(trainer, state)
    chunk = min(chunk or auto_chunk(config.num_updates), config.num_updates)
    return _Start(step, state, history, seconds_before, chunk, resume)


def _compile_chunk(trainer, start: _Start, programs: Programs, log: Log, compiling: str) -> dict[int, Callable]:
    """``{K: compiled chunk of K updates}`` for the run's chunk size, after the line saying what trains
    and the ``compiling`` line."""
    config, chunk = trainer.config, start.chunk
    split = f", environments split over {trainer.mesh.devices.size} devices" if trainer.mesh is not None else ""
    log(f"training {config.env}: {config.num_updates} updates x {config.batch_size} env steps "
        f"({config.num_envs} envs x {config.num_steps} steps) on {jax.default_backend()}{split}, "
        f"{chunk} update{'s' if chunk > 1 else ''} per chunk")
    log(compiling)
    hparams = HParams.from_config(config)
    return {chunk: programs.compile(f"chunk{chunk}", make_chunk(trainer, chunk), (start.state, hparams), (0,))}


def _train_chunks(trainer, out_dir, checkpointer, options: RunOptions, start: _Start, compiled, progress, stop,
                  programs: Programs, log: Log):
    """``(loop, step, state)`` after training from ``start`` with the loggers and the saver; a
    stop signal before the last update raises :class:`~purejaxppo.errors.Interrupted`."""
    config = trainer.config
    saver = None
    if checkpointer is not None and options.checkpoint_every != 0:
        meta = {"config": config.to_dict(), "version": results.package_versions().get("purejaxppo"),
                "chunk_updates": start.chunk}
        saver = Saver(checkpointer, options.checkpoint_every, meta, config.batch_size,
                      start.step if start.resumed else None)
    loggers = make_loggers(config, out_dir, _concat(start.history), start.step, progress, options.tensorboard,
                           options.wandb)
    if out_dir is not None:  # what the writing after training needs, imported while the device trains
        _import_in_background(*(["orbax.checkpoint"] if checkpointer is not None else []), *results.PLOT_MODULES)
    loop = _Loop(trainer, HParams.from_config(config), start.chunk, compiled, start.history, loggers, saver,
                 start.seconds_before, stop, options.stop_at_return, programs)
    try:
        step, state = loop.train(start.state, start.step)
    finally:
        for logger in loggers:
            logger.close()
    if loop.extra_compile:
        log(f"compiled the last, shorter chunk in {loop.extra_compile:.1f} s")
    if loop.stopped is not None and step < config.num_updates:  # a run that got to its end finishes
        _stopped(loop, step, saver)
    return loop, step, state


def _diverged(loop: "_Loop", step: int, summary: dict[str, Any]) -> None:
    d, saver = loop.diverged, loop.saver
    kept = (f"the last finite checkpoint, at update {saver.last_saved}, is kept" if saver and saver.last_saved
            else "no finite checkpoint was saved before")
    raise Diverged(f"training diverged: {d['metric']} is not finite at update {d['update']} (found at the end "
                   f"of the chunk ending at update {step}); {kept}; try a smaller --lr or --max-grad-norm", summary)


def _import_in_background(*modules: str) -> None:
    """Import ``modules`` in a daemon thread. Training releases Python's lock while the
    compiled chunk runs, so imports that the run needs only after it (Orbax for the
    checkpoints, matplotlib for the learning curve: most of a second together) cost a short
    run nothing. A failed import is left for the main thread to raise where it is used."""

    def work() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    threading.Thread(target=work, name="purejaxppo-imports", daemon=True).start()


def _stopped(loop: "_Loop", step: int, saver: Saver | None) -> None:
    name = signal.Signals(loop.stopped).name
    if saver is None:
        where = "no checkpoint was saved (checkpoints are off), so the run cannot be resumed"
    elif saver.last_saved:
        where = f"checkpoint at update {saver.last_saved}; continue with --resume"
    else:
        where = "no checkpoint yet; --resume starts it again from update 0"
    raise Interrupted(f"stopped by {name} at update {step}; {where}", loop.stopped)


class _Loop:
    """The loop over chunks, between which it logs, checks for divergence, checkpoints and
    honours stop signals."""

    def __init__(self, trainer, hparams, chunk, compiled, history, loggers, saver, seconds_before, stop,
                 stop_at_return, programs):
        self.trainer, self.hparams, self.chunk, self.compiled = trainer, hparams, chunk, compiled
        self.programs = programs
        self.stop_at_return = stop_at_return
        self.reached: dict[str, Any] | None = None  # where the run reached stop_at_return
        self.history, self.loggers, self.saver, self.stop = history, loggers, saver, stop
        self.seconds_before = seconds_before
        self.extra_compile = 0.0
        self.train_seconds = 0.0
        self.diverged: dict[str, Any] | None = None
        self.stopped: int | None = None
        self.finite = jax.jit(finite_state)
        self.t_train = time.perf_counter()

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t_train

    def train(self, state, step):
        """Chunks until the run ends, diverges or is asked to stop; returns ``(step, state)``."""
        config, n_updates = self.trainer.config, self.trainer.config.num_updates
        self.t_train = time.perf_counter()
        while step < n_updates and self.stop.signum is None:
            k = min(self.chunk, n_updates - step)
            if k not in self.compiled:  # the last, shorter chunk
                tc = time.perf_counter()
                self.compiled[k] = self.programs.compile(f"chunk{k}", make_chunk(self.trainer, k),
                                                         (state, self.hparams), (0,))
                self.extra_compile += time.perf_counter() - tc
                self.t_train += time.perf_counter() - tc
            state, metrics = self.compiled[k](state, self.hparams)
            metrics = jax.device_get(metrics)
            finite = bool(self.finite(state))
            rows = results.metrics_rows(config, metrics, start=step)
            for name, v in metrics.items():
                self.history.setdefault(name, []).append(np.asarray(v))
            for logger in self.loggers:
                logger.log(rows)
            bad = first_non_finite(metrics)
            step += k
            if bad is not None or not finite:
                at, metric = (step - k + bad[0] + 1, bad[1]) if bad is not None else (step, "the learned state")
                self.diverged = {"update": at, "metric": metric, "env_steps": at * config.batch_size}
                break
            if self.stop_at_return is not None and _reached(self.history, self.stop_at_return):
                self.reached = {"target": self.stop_at_return, "update": step, "env_steps": step * config.batch_size}
                break  # the final checkpoint below, as at the last update
            if self.saver is not None and self.saver.due(step, step - k, step == n_updates):
                self.saver.save(step, state, _concat(self.history), self.elapsed())
        jax.block_until_ready(state)
        self.train_seconds = time.perf_counter() - self.t_train
        self.stopped = self.stop.signum
        if self.saver is not None and self.diverged is None and step > 0:
            self.saver.save(step, state, _concat(self.history), self.elapsed())
        return step, state


def _reached(history: dict[str, list[np.ndarray]], target: float) -> bool:
    """Whether the run's final return so far (the summary's, :func:`final_return`) is at least ``target``."""
    names = ("charts/episodic_return", "charts/episodes")
    value = final_return({name: np.concatenate(history[name]) for name in names})
    return bool(np.isfinite(value) and value >= target)


def _finish(trainer, out_dir, state, metrics, step, start_step, train_seconds, chunk, summary, log) -> dict[str, Any]:
    """Print the result line; write summary.json and the learning curve; return the summary."""
    config = trainer.config
    done_steps = (step - start_step) * config.batch_size
    sps = done_steps / train_seconds if done_steps and train_seconds > 0 else None
    final = float(final_return(metrics)) if step else float("nan")
    rate = f" ({sps:,.0f} steps/s)" if sps else ""
    if summary.get("stopped_at_return"):
        log(f"reached the target return {summary['stopped_at_return']['target']:g} after update {step}")
    log(f"trained {done_steps:,} env steps in {train_seconds:.1f} s{rate}; final return {final:.2f}")
    summary = {
        "env": config.env, "seed": config.seed, "preset": summary["preset"],
        "env_steps": step * config.batch_size, "num_updates": config.num_updates, "final_return": final,
        "compile_seconds": summary["compile_seconds"], "train_seconds": round(train_seconds, 3),
        "sps": round(sps, 1) if sps else None, "chunk_updates": chunk,
        "resumed_from_update": summary["resumed_from_update"], "total_train_seconds": summary["total_train_seconds"],
        "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
        "data_parallel_devices": trainer.mesh.devices.size if trainer.mesh is not None else 1,
        "diverged": summary["diverged"],
        "stopped_at_return": summary["stopped_at_return"],
        "versions": results.package_versions(config.env),
    }
    if out_dir is not None:
        diverged = summary["diverged"]
        results.plot_learning_curve(
            os.path.join(out_dir, layout.CURVE),
            np.arange(1, step + 1) * config.batch_size,
            np.asarray(metrics["charts/episodic_return"], np.float64),
            f"PPO on {config.env} (seed {config.seed})",
            diverged_at=diverged["env_steps"] if diverged else None,
        )
        layout.write_json(os.path.join(out_dir, layout.SUMMARY), summary)
        log(f"results in {out_dir}")
    summary["metrics"] = metrics
    summary["state"] = state
    return summary


def _concat(history: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in history.items()}
