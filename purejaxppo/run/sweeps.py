"""Sweeps as entry points: :func:`sweep` in Python and the ``sweep`` command's launch, each
compiling through the saved programs and, for the command, writing the results folder.

:mod:`purejaxppo.scale.sweep` runs a plan (:func:`~purejaxppo.scale.sweep.run_plan`); this module
adds what a run's folder and cache need (the lock, the saved programs, the progress bar, the
result files), which live in :mod:`purejaxppo.run`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from purejaxppo.core.config import PPOConfig
from purejaxppo.core.train import Trainer, make_trainer
from purejaxppo.errors import Interrupted, RunError
from purejaxppo.run import layout, results
from purejaxppo.run.compiled import auto_chunk, check_memory, make_programs
from purejaxppo.run.programs import Programs
from purejaxppo.run.sweep_agents import save_agents
from purejaxppo.scale.pbt import PBTConfig, Space, space_of
from purejaxppo.scale.plan import Distribution, SweepPlan, make_plan
from purejaxppo.scale.sweep import SweepResult, run_plan

Log = Callable[[str], None]


def sweep(
    config: PPOConfig | Trainer,
    num_seeds: int = 1,
    grid: dict[str, list[float]] | None = None,
    samples: dict[str, Distribution] | None = None,
    num_samples: int = 0,
    mesh: Mesh | None = None,
    program_cache: str | None = None,
    pbt: PBTConfig | None = None,
) -> SweepResult:
    """Train ``num_seeds`` seeds of every setting of ``grid`` x ``samples`` in one compiled program.

    ``pbt``: train the agents as a PBT population (:mod:`purejaxppo.scale.pbt`) exploring the
    ``samples`` distributions and the ``grid`` values; the result's ``pbt`` holds its lineage.

    ``program_cache``: a folder of saved traced programs (:mod:`purejaxppo.run.programs`; the
    command line uses the ``programs`` folder of its compilation cache). A later call of the
    same sweep on one device loads its program instead of tracing it. The key covers a config's
    trainer, not functions of one's own: give it only with a ``PPOConfig`` or a trainer that
    :func:`~purejaxppo.core.train.make_trainer` built from one.

    Example:
        >>> from purejaxppo import PPOConfig, sweep
        >>> r = sweep(PPOConfig(total_timesteps=4096), num_seeds=2, grid={"lr": [1e-3, 3e-4]})
        >>> r.final_return.shape
        (2, 2)
    """
    trainer = config if isinstance(config, Trainer) else make_trainer(config)
    check_agents_fit(trainer, num_seeds, grid, num_samples)
    plan = make_plan(trainer.config, num_seeds, grid, samples, num_samples)
    programs = make_programs(trainer, program_cache) if program_cache is not None else None
    space = space_of(grid or {}, samples or {}) if pbt is not None else None
    return run_plan(trainer, plan, mesh, programs=programs, pbt=pbt, space=space)


def check_agents_fit(trainer: Trainer, num_seeds: Any, grid: dict[str, Any] | None, num_samples: Any) -> None:
    """The agents a sweep asks for fit in memory (:func:`~purejaxppo.run.compiled.check_memory`),
    checked before its plan draws their keys; counts that are not integers are left to the plan."""
    counts = [num_seeds, num_samples or 1, *(len(v) for v in (grid or {}).values() if isinstance(v, (list, tuple)))]
    if all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts):
        check_memory(trainer, agents=math.prod(counts))


def launch_sweep(trainer: Trainer, plan: SweepPlan, out: str, spec: dict[str, Any], *, overwrite: bool,
                 progress: bool | None, program_cache: str | None, log: Log = print, pbt: PBTConfig | None = None,
                 space: Space | None = None, resume: bool = False) -> None:
    """The ``sweep`` command after its settings are resolved: train every agent of ``plan`` in
    chunks (a progress bar between them) through the saved programs in ``program_cache`` (as a
    PBT population exploring ``space`` with ``pbt``), and write the results and the agents
    (:mod:`purejaxppo.run.sweep_agents`) to ``out`` from process 0, which holds the folder's lock
    meanwhile. ``spec`` (how the plan was asked for) is saved with the results, with the seconds
    taken. In one process, the population is checkpointed after every chunk (``out/checkpoints``):
    SIGINT or SIGTERM stop the sweep there, and ``resume`` continues it from its last checkpoint
    with the same numbers as an uninterrupted sweep."""
    with contextlib.ExitStack() as stack:
        if jax.process_index() == 0:  # the process that writes holds the folder's lock
            stack.enter_context(layout.locked(out))
            if not resume:
                layout.check_out_dir(out, overwrite, "sweep")
        programs = make_programs(trainer, program_cache)
        log(f"preset: {spec.get('preset') or 'none'}")
        spec = dict(spec, num_agents=plan.num_agents)
        saving = _Saving(trainer, plan, out, pbt, resume, overwrite, spec, log) if jax.process_count() == 1 else None
        if saving is not None:
            stack.callback(saving.checkpointer.close)
        result, seconds = _train_agents(trainer, plan, programs, progress, log, pbt, space, saving)
        if jax.process_index() != 0:
            log(f"process {jax.process_index()}: done in {seconds:.1f} s; process 0 writes the results")
            return
        rows = _write(out, trainer.config, result, dict(spec, seconds=round(seconds, 2)), overwrite)
        _report(trainer.config, plan, rows, seconds, programs, out, log)
        if result.pbt is not None:
            from purejaxppo.run.population import report_lines

            for line in report_lines(result.pbt):
                log(line)


class _Saving:
    """A sweep's checkpoints in one process: the population after every chunk, the point to resume
    from, and the stop at a chunk's end when a signal came."""

    def __init__(self, trainer: Trainer, plan: SweepPlan, out: str, pbt: PBTConfig | None, resume: bool,
                 overwrite: bool, spec: dict[str, Any], log: Log):
        from purejaxppo.run.checkpoints import Checkpointer
        from purejaxppo.run.signals import StopSignals

        self.trainer, self.plan, self.out, self.pbt, self.log = trainer, plan, out, pbt, log
        folder = os.path.join(out, layout.CHECKPOINTS)
        if overwrite and not resume and os.path.isdir(folder):
            shutil.rmtree(folder)  # the replaced sweep's; its results stay until the new ones are written
        os.makedirs(out, exist_ok=True)
        layout.write_config(out, trainer.config, sweep=spec)  # what --resume reads back
        self.checkpointer = Checkpointer(folder, keep=2)
        self.meta = {"config": trainer.config.to_dict(), "sweep": spec}
        self.stop = StopSignals("stopping at the end of the current chunk (the population is saved there)",
                                "stopped at once; the sweep continues from its last checkpoint with --resume")
        self.start = self._restore() if resume else None

    def _restore(self):
        from purejaxppo.scale.agents import Progress, initial_carry
        from purejaxppo.scale.pbt import initial_pbt_carry
        from purejaxppo.scale.plan import stack_hparams

        if not self.checkpointer.steps():
            self.log(f"{self.out} holds no checkpoint of the sweep: it starts from update 0")
            return None
        carry_of = initial_carry if self.pbt is None else initial_pbt_carry
        like = carry_of(self.trainer, self.plan.agent_keys(), stack_hparams(self.trainer.config, self.plan))
        step, carry, history, _ = self.checkpointer.restore(like, log=self.log)
        self.log(f"resuming the sweep in {self.out} at update {step} of {self.trainer.config.num_updates}")
        carry = jax.tree_util.tree_map(jnp.asarray, carry)
        return Progress(carry, step, {k: np.moveaxis(v, 0, 1) for k, v in history.items()})

    def __call__(self, progress) -> None:
        """Save the population after a chunk; stop there if a signal came meanwhile."""
        history = {k: np.moveaxis(v, 1, 0) for k, v in progress.outputs.items()}
        self.checkpointer.save(progress.done, progress.carry, history, self.meta)
        if self.stop.signum is not None:
            self.checkpointer.close()
            raise Interrupted(f"stopped at update {progress.done} of {self.trainer.config.num_updates}; continue "
                              f"with: purejaxppo sweep --resume --out {self.out}", self.stop.signum)


def _report(config: PPOConfig, plan: SweepPlan, rows: list, seconds: float, programs: Programs, out: str,
            log: Log) -> None:
    from purejaxppo.scale.stats import format_table

    total_steps = plan.num_agents * config.num_updates * config.batch_size
    log(f"trained {plan.num_agents} agents ({total_steps:,} env steps) in {seconds:.1f} s, compile included"
        f"{programs.loaded_note()}")
    log(format_table(rows))
    note = diverged_note(rows)
    if note:
        log(note)
    log(f"results in {out}")


def diverged_note(rows: list) -> str | None:
    """The line that names the settings with diverged agents (None when none diverged)."""
    bad = [r for r in rows if r.get("diverged")]
    if not bad:
        return None
    listed = "; ".join(f"setting {r['setting']} ({r['diverged']} of {r['seeds']} seeds)" for r in bad)
    total = sum(r["diverged"] for r in bad)
    return (f"warning: {total} agent{'s' if total > 1 else ''} diverged (non-finite losses or returns): {listed}; "
            "their final return and AUC are left empty (NaN) and out of the means; results.csv marks them")


def _train_agents(trainer: Trainer, plan: SweepPlan, programs: Programs, progress: bool | None,
                  log: Log, pbt: PBTConfig | None = None, space: Space | None = None,
                  saving: _Saving | None = None) -> tuple[SweepResult, float]:
    """``(result, seconds)`` of training the plan in chunks, with a progress bar on process 0 (and
    ``saving``'s checkpoints after each chunk, from its resume point)."""
    from purejaxppo.run.loggers import ProgressBar

    config = trainer.config
    log(f"sweep on {config.env}: {len(plan.settings)} setting(s) x {plan.num_seeds} seed(s) = {plan.num_agents} "
        f"agents, {config.num_updates} updates each, on {jax.device_count()} {jax.default_backend()} device(s)"
        + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""))
    steps_per_update = plan.num_agents * config.batch_size
    bar = ProgressBar(config.num_updates * steps_per_update,
                      enabled=progress and jax.process_index() == 0 if progress is not None else None)
    t0 = time.perf_counter()
    start = None if saving is None else saving.start
    try:
        with saving.stop if saving is not None else contextlib.nullcontext():
            result = run_plan(trainer, plan, chunk_updates=auto_chunk(config.num_updates),
                              on_chunk=lambda done: bar.update(done * steps_per_update), programs=programs, pbt=pbt,
                              space=space, start=start, on_progress=saving)
    finally:
        bar.close()
    return result, time.perf_counter() - t0


def _write(out: str, config: PPOConfig, result: SweepResult, spec: dict[str, Any], overwrite: bool) -> list:
    """Write the sweep's results whole; a signal that came meanwhile then stops the command."""
    from purejaxppo.run.signals import StopSignals

    with StopSignals("stopping once the results are written", "stopped at once; the results may be incomplete") \
            as stop:
        if overwrite:
            layout.clear_run(out, "sweep")
        try:
            rows = results.write_sweep(out, config, result, spec)
            save_agents(out, result.states, result.final_hparams)
            if result.pbt is not None:
                from purejaxppo.run.population import write_pbt

                write_pbt(out, result.pbt, config.env, config.batch_size)
        except OSError as e:  # a full disk: one line naming the folder (NumPy's and Matplotlib's errors name no file)
            raise RunError(f"cannot write the sweep's results in {out}: {e.strerror or e}; accepted: a folder with "
                           "space you can write to") from None
    if stop.signum is not None:
        raise Interrupted(f"stopped after writing the sweep's results in {out}", stop.signum)
    return rows
