"""Running the command line in this process, as ``purejaxppo ...`` would, with its output captured;
running a notebook in a real Jupyter kernel."""

import contextlib
import io
import json
from pathlib import Path
from typing import NamedTuple

import jax
import nbformat
from nbclient import NotebookClient

from purejaxppo.cli import main


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def program_reads(monkeypatch) -> list[bool]:
    """Whether each saved program looked up from now on (:mod:`purejaxppo.run.programs`) was found, in order."""
    from purejaxppo.run import programs

    found: list[bool] = []
    read = programs._read

    def counted(path):
        loaded = read(path)
        found.append(loaded is not None)
        return loaded

    monkeypatch.setattr(programs, "_read", counted)
    return found


def pendulum_rollout(**settings):
    """One rollout of Pendulum (``PPOConfig(env="Pendulum-v1", normalize_obs=True, **settings)``) and its
    batch, collected with observation statistics far from the identity, so a missing normalisation shows:
    ``(parts, hparams, state after the rollout, trajectory, batch)``."""
    import jax.numpy as jnp

    from purejaxppo import PPOConfig
    from purejaxppo.core import feedforward
    from purejaxppo.core.config import HParams
    from purejaxppo.core.train import init_state, make_parts

    config = PPOConfig(env="Pendulum-v1", normalize_obs=True, **settings)
    parts = make_parts(config)
    hparams = HParams.from_config(config)
    state = init_state(parts, jax.random.key(0), hparams)
    state = state.replace(obs_rms=state.obs_rms._replace(mean=jnp.array([0.5, -0.5, 1.0]), var=jnp.array([0.25, 4.0, 9.0])))
    state, traj, _ = jax.jit(lambda s, k: feedforward.collect(parts, s, k))(state, jax.random.key(1))
    _, batch = feedforward.make_batch(parts, state, traj, hparams)
    return parts, hparams, state, traj, batch


def cache_misses(call):
    """``call()``'s result and how many programs it compiled that JAX's persistent cache did not hold."""
    import jax

    misses = []

    def listen(event, **kwargs):
        if event == "/jax/compilation_cache/cache_misses":
            misses.append(event)

    jax.monitoring.register_event_listener(listen)
    try:
        return call(), len(misses)
    finally:
        jax.monitoring.unregister_event_listener(listen)


def run_main(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # --help
            code = e.code
    return Result(code, out.getvalue(), err.getvalue())


# ---- notebooks ---------------------------------------------------------------------------
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, parameters: str, cwd: Path) -> tuple[dict, nbformat.NotebookNode]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: one cell tagged 'parameters'"
    cells[0].source = parameters
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1]), nb


def notebook_stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")


def random_rollout(env, vstep, n: int, steps: int):
    """``key -> every output of steps vector steps`` of n environments (an adapted ``env``) under
    uniform random actions: ``(obs, reward, terminated, truncated, final_obs, states)``, each [steps, n, ...]."""

    def run(key):
        _, states = jax.vmap(env.reset)(jax.random.split(key, n))

        def body(states, k):
            keys = jax.random.split(k, n)
            actions = jax.vmap(env.env.action_space(env.params).sample)(keys)
            obs, states, reward, terminated, truncated, final = vstep(keys, states, actions)
            return states, (obs, reward, terminated, truncated, final, states)

        return jax.lax.scan(body, states, jax.random.split(jax.random.fold_in(key, 1), steps))[1]

    return run
