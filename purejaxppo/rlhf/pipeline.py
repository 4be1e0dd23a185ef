"""The whole alignment study in stages, with checkpoints, result files and plots.

Stages, each writing ``DIR/stages/<stage>.json`` and an Orbax checkpoint
``DIR/checkpoints/<stage>``, each reading its predecessors' checkpoints:

* ``sft``: the reference policy on samples of G;
* ``reward``: preference pairs of reference samples, the Bradley-Terry reward model, normalised;
* ``ppo``: three PPO runs vmapped in one program, adaptive beta, fixed beta and beta ~ 0, run in
  chunks of ``eval_every`` iterations with every policy's exact KL, proxy, gold and win rate
  computed by enumeration between chunks;
* ``dpo``: DPO at several betas, vmapped;
* ``bon``: best-of-n against the proxy, exactly;
* ``grpo``, ``rloo``: GRPO and RLOO with the PPO stage's three KL settings, vmapped
  (:mod:`purejaxppo.rlhf.methods`);
* ``ensemble``: reward-model ensembles, and PPO, GRPO and best-of-n against their objectives.

``DIR/results.csv``, ``DIR/summary.md`` and the plots are rewritten from the stage files after
every stage, so they show whatever has run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.core.config import check_integer
from purejaxppo.errors import ConfigError, RunError
from purejaxppo.rlhf import dpo as dpo_mod
from purejaxppo.rlhf import exact
from purejaxppo.rlhf import group as group_mod
from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf import ppo as ppo_mod
from purejaxppo.rlhf import reward as reward_mod
from purejaxppo.rlhf import sft as sft_mod
from purejaxppo.rlhf.methods import MethodStages
from purejaxppo.rlhf.task import TaskSpec, entropy_per_token, gold_reward, label_pairs, make_task, sequence_log_probs_g
from purejaxppo.run import layout
from purejaxppo.run.checkpoints import restore_tree, save_tree
from purejaxppo.run.signals import ExitOnSignal

STAGES = ("sft", "reward", "ppo", "dpo", "bon", "grpo", "rloo", "ensemble")
NEEDS = {"sft": (), "reward": ("sft",), **{st: ("sft", "reward") for st in STAGES[2:]}}
PPO_VARIANTS = ("adaptive", "fixed", "beta~0")
RESULT_COLUMNS = ("method", "setting", "exact_kl", "proxy", "gold", "win_rate")


class DemoSettings(NamedTuple):
    """Everything that defines a study (all static; floats of PPO are traced inside it)."""

    seed: int = 0
    task: TaskSpec = TaskSpec(length=6)
    model: seqmodel.ModelSpec = seqmodel.ModelSpec()
    sft: sft_mod.SFTSettings = sft_mod.SFTSettings()
    pairs: int = 4096
    reward: reward_mod.RewardSettings = reward_mod.RewardSettings()
    ppo: ppo_mod.RLHFSettings = ppo_mod.RLHFSettings(iterations=150)
    hparams: ppo_mod.RLHFHParams = ppo_mod.RLHFHParams()
    fixed_kl_coef: float = 0.2
    hack_kl_coef: float = 0.001
    hack_learning_rate: float = 1e-4  # slower, so that the over-optimisation is seen step by step
    eval_every: int = 10
    dpo: dpo_mod.DPOSettings = dpo_mod.DPOSettings()
    dpo_betas: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0)
    best_of: tuple[int, ...] = tuple(2**i for i in range(17))  # 1 .. 65536
    eval_samples: int = 20000
    group: group_mod.GroupSettings = group_mod.GroupSettings(iterations=150)
    ensemble_members: int = 4
    ensemble_penalty: float = 1.0  # lambda of the objective mean - lambda * std


def tiny(seed: int = 0, task_seed: int = 0) -> DemoSettings:
    """Small budgets (responses of 5 tokens, fewer steps) for tests and a quick look."""
    return DemoSettings(
        seed=seed,
        task=TaskSpec(seed=task_seed, length=5),
        model=seqmodel.ModelSpec(width=32, layers=2, heads=4),
        sft=sft_mod.SFTSettings(steps=500, batch=256, learning_rate=5e-3),
        pairs=2048,
        reward=reward_mod.RewardSettings(epochs=6, batch=128, normalise_samples=8192),
        ppo=ppo_mod.RLHFSettings(iterations=40, batch=128),
        eval_every=10,
        dpo=dpo_mod.DPOSettings(epochs=3, batch=128),
        dpo_betas=(0.1, 0.5),
        best_of=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536),
        eval_samples=8192,
        group=group_mod.GroupSettings(iterations=40, prompts=16, group=8),
        ensemble_members=3,
    )


def check_settings(s: DemoSettings) -> None:
    from purejaxppo.rlhf.task import check_spec

    check_spec(s.task)
    ppo_mod.check_settings(s.ppo)
    group_mod.check_settings(s.group)
    check_integer("ensemble_members", s.ensemble_members, 2)
    if not s.ensemble_penalty >= 0:
        raise ConfigError(f"ensemble_penalty={s.ensemble_penalty} must be a number >= 0")
    for name, value, least in (("sft.steps", s.sft.steps, 2), ("reward.epochs", s.reward.epochs, 1),
                               ("dpo.epochs", s.dpo.epochs, 1), ("eval_every", s.eval_every, 1)):
        check_integer(name, value, least)
    if s.ppo.iterations % s.eval_every:
        raise ConfigError(f"iterations={s.ppo.iterations} is not a multiple of eval_every={s.eval_every}")
    if s.group.iterations % s.eval_every:
        raise ConfigError(f"group.iterations={s.group.iterations} is not a multiple of eval_every={s.eval_every}")
    if s.pairs < s.reward.batch or s.pairs < s.dpo.batch:
        raise ConfigError(f"pairs={s.pairs} is fewer than one minibatch ({max(s.reward.batch, s.dpo.batch)})")
    if any(b <= 0 for b in s.dpo_betas) or any(n < 1 for n in s.best_of):
        raise ConfigError("dpo_betas must be positive and best_of at least 1")
    if not math.isfinite(float(s.hparams.kl_target)) or float(s.hparams.kl_target) <= 0:
        raise ConfigError(f"kl_target={s.hparams.kl_target} must be a positive number of nats")


# ---- settings on disk -------------------------------------------------------------------
def settings_to_dict(s: DemoSettings) -> dict[str, Any]:
    out = {}
    for name, value in s._asdict().items():
        out[name] = value._asdict() if hasattr(value, "_asdict") else value
    return out


def settings_from_dict(d: dict[str, Any]) -> DemoSettings:
    defaults = DemoSettings()
    kw = {}
    for name, default in defaults._asdict().items():
        value = d.get(name, default)
        if hasattr(default, "_asdict"):
            value = type(default)(**value) if isinstance(value, dict) else value
        elif isinstance(default, tuple):
            value = tuple(value)
        kw[name] = value
    return DemoSettings(**kw)


def study_settings(out: str, stage: str, tiny_budget: bool = False, *, seed: int | None = None,
                   task_seed: int | None = None, length: int | None = None, prompts: int | None = None,
                   kl_target: float | None = None, iterations: int | None = None) -> DemoSettings:
    """The settings a stage runs with: a single stage starts from the study's saved settings in
    ``out`` (when it has them), the demo from :func:`tiny` or :class:`DemoSettings`; each value
    given (not None) replaces the one there."""
    saved = os.path.join(out, "settings.json")
    if stage != "demo" and os.path.exists(saved):
        with open(saved) as f:
            settings = settings_from_dict(json.load(f))
    else:
        settings = tiny() if tiny_budget else DemoSettings()
    task = settings.task
    for field, value in (("seed", task_seed), ("length", length), ("n_prompts", prompts)):
        if value is not None:
            task = task._replace(**{field: value})
    settings = settings._replace(task=task)
    if seed is not None:
        settings = settings._replace(seed=seed)
    if kl_target is not None:
        settings = settings._replace(hparams=settings.hparams._replace(kl_target=kl_target))
    if iterations is not None:
        settings = settings._replace(ppo=settings.ppo._replace(iterations=iterations),
                                     group=settings.group._replace(iterations=iterations))
    return settings


# ---- checkpoints ------------------------------------------------------------------------
def _ckpt_path(out: str, stage: str) -> str:
    return os.path.join(os.path.abspath(out), "checkpoints", stage)


def save_checkpoint(out: str, stage: str, tree: Any) -> None:
    """Save a stage's product; a failed write (a full disk) is one :class:`RunError`."""
    from purejaxppo.run.checkpoints import _failure

    path = _ckpt_path(out, stage)
    try:
        save_tree(path, tree)
    except Exception as e:  # noqa: BLE001 - any failure to write is reported the same way
        raise RunError(f"saving the {stage} checkpoint in {path} failed: {_failure(e)}; the earlier stages' files "
                       f"are intact; free space and run `purejaxppo rlhf {stage} --out {out}` again") from None


def load_checkpoint(out: str, stage: str, like: Any) -> Any:
    path = _ckpt_path(out, stage)
    if not os.path.isdir(path):
        raise RunError(f"{out} has no {stage} checkpoint; run `purejaxppo rlhf {stage} --out {out}` (or `demo`) first")
    return restore_tree(path, like)


# ---- the study ----------------------------------------------------------------------------
class Study(MethodStages):
    """The task, the model, and the stages' products, loaded or trained."""

    def __init__(self, settings: DemoSettings, out: str, log=print):
        check_settings(settings)
        self.s = settings
        self.out = out
        self.log = log
        self.spec = settings.task
        self.task = make_task(settings.task)
        self.model = seqmodel.make_model(settings.task.n_tokens, settings.task.n_prompts, settings.task.length, settings.model)
        root = jax.random.key(settings.seed)
        self.keys = dict(zip(STAGES[:5] + ("eval",), jax.random.split(root, 6)))  # the first five stages' keys as before
        self.keys.update({st: jax.random.fold_in(root, 100 + i) for i, st in enumerate(STAGES[5:])})
        self._sft = self._rm = self._pairs = self._enum = self._reference = self._frontier = None

    # products of earlier stages
    def params_like(self):
        return jax.eval_shape(lambda: seqmodel.init_params(self.model, jax.random.key(0)))

    @property
    def sft_params(self):
        if self._sft is None:
            self._sft = load_checkpoint(self.out, "sft", self.params_like())
        return self._sft

    @property
    def reward_model(self) -> reward_mod.RewardModel:
        if self._rm is None:
            self._load_reward()
        return self._rm

    @property
    def pairs(self):
        if self._pairs is None:
            self._load_reward()
        return self._pairs

    def _load_reward(self):
        n, length = self.s.pairs, self.spec.length
        like = {
            "reward": reward_mod.RewardModel(self.params_like(), jnp.zeros(()), jnp.zeros(())),
            "pairs": {k: jnp.zeros((n, length) if k != "prompts" else (n,), jnp.int32) for k in ("prompts", "chosen", "rejected")},
        }
        tree = load_checkpoint(self.out, "reward", like)
        self._rm = reward_mod.RewardModel(**tree["reward"]) if isinstance(tree["reward"], dict) else tree["reward"]
        self._pairs = _pairs_from(tree["pairs"])

    @property
    def enumeration(self) -> exact.Enumeration:
        if self._enum is None:
            prompts, responses = exact.grid(self.spec.n_prompts, self.spec.n_tokens, self.spec.length)
            m, rm = self.model, self.reward_model
            # Arrays go in as arguments (closed over, they would be folded into the program).
            ref = jax.jit(lambda p: exact.grid_log_probs(m, p, self.spec.n_prompts))(self.sft_params)
            proxy = jax.jit(lambda r, x, y: (exact.all_scores(m, r.params, x, y) - r.shift) / r.scale)(rm, prompts, responses)
            gold = gold_reward(self.task, self.spec, prompts, responses)
            # The per-response values leave JAX here; every sum over them is float64 (exact.py).
            self._enum = exact.Enumeration(prompts, responses, *(np.asarray(a, np.float64) for a in (ref, proxy, gold)))
        return self._enum

    def eval_pairs(self):
        """Fresh reference pairs with their gold rewards (held out from every training set)."""
        k1, k2, k3 = jax.random.split(self.keys["eval"], 3)
        n = self.s.eval_samples
        prompts = jax.random.randint(k1, (n,), 0, self.spec.n_prompts)
        sample = jax.jit(lambda p, k, x: seqmodel.sample(self.model, p, k, x))
        a, b = sample(self.sft_params, k2, prompts), sample(self.sft_params, k3, prompts)
        return prompts, a, b, gold_reward(self.task, self.spec, prompts, a), gold_reward(self.task, self.spec, prompts, b)

    # stages
    def run_sft(self) -> dict[str, Any]:
        m, task, spec = self.model, self.task, self.spec
        params, losses = jax.jit(lambda k: sft_mod.train_sft(m, task, spec, k, self.s.sft))(self.keys["sft"])
        self._sft, self._rm, self._pairs = params, None, None
        self._enum = self._reference = self._frontier = None
        prompts, responses = sft_mod.g_batch(task, jax.random.fold_in(self.keys["eval"], 1), self.s.eval_samples, spec.length)
        heldout = float(jax.jit(lambda p, x, y: sft_mod.nll_per_token(m, p, x, y))(params, prompts, responses))
        # Exact cross-entropy per token: E_G[-log pi] / L, by enumeration.
        gp, gy = exact.grid(spec.n_prompts, spec.n_tokens, spec.length)
        g_logp = sequence_log_probs_g(task.p0, task.trans, gp, gy)
        ref = jax.jit(lambda p: exact.grid_log_probs(m, p, spec.n_prompts))(params)
        cross = float(exact.expectation(g_logp, -ref)) / spec.length
        save_checkpoint(self.out, "sft", params)
        return {
            "entropy_per_token": entropy_per_token(task, spec),
            "heldout_nll_per_token": heldout,
            "exact_cross_entropy_per_token": cross,
            "final_train_loss": float(losses[-1]),
            "steps": self.s.sft.steps,
        }

    def run_reward(self) -> dict[str, Any]:
        m, task, spec, ref = self.model, self.task, self.spec, self.sft_params
        kp, k1, k2, kl, ktrain, knorm = jax.random.split(self.keys["reward"], 6)
        n = self.s.pairs
        prompts = jax.random.randint(kp, (n,), 0, spec.n_prompts)
        sample = jax.jit(lambda p, k, x: seqmodel.sample(m, p, k, x))
        pairs = label_pairs(task, spec, kl, prompts, sample(ref, k1, prompts), sample(ref, k2, prompts))
        train = jax.jit(lambda p, d, k: reward_mod.train_reward_model(m, p, d, k, self.s.reward))
        params, losses = train(ref, pairs, ktrain)
        normalise = jax.jit(lambda p, r, k: reward_mod.normalise(m, p, r, k, spec.n_prompts, self.s.reward.normalise_samples))
        rm = normalise(params, ref, knorm)
        self._rm, self._pairs = rm, pairs
        self._enum = self._reference = self._frontier = None  # they depend on the reward model
        gold_c = gold_reward(task, spec, pairs.prompts, pairs.chosen)
        gold_r = gold_reward(task, spec, pairs.prompts, pairs.rejected)
        # Held-out checks on fresh reference samples.
        ep, a, b, ga, gb = self.eval_pairs()
        proxy = jax.jit(lambda r, x, y: reward_mod.proxy_reward(m, r, x, y))
        pa, pb = proxy(rm, ep, a), proxy(rm, ep, b)
        clear = np.abs(np.asarray(ga - gb)) >= 0.1
        accuracy = float(np.mean((np.asarray(pa > pb) == np.asarray(ga > gb))[clear]))
        both = np.concatenate([np.asarray(pa), np.asarray(pb)])
        save_checkpoint(self.out, "reward", {"reward": rm, "pairs": pairs._asdict()})
        return {
            "pairs": n,
            "label_noise": float(jnp.mean(gold_c < gold_r)),
            "label_temperature": float(task.tau),
            "heldout_accuracy": accuracy,
            "heldout_comparisons": int(clear.sum()),
            "proxy_mean_on_reference": float(both.mean()),
            "proxy_std_on_reference": float(both.std()),
            "final_train_loss": float(np.mean(np.asarray(losses)[-10:])),
        }

    def reference_point(self) -> dict[str, float]:
        if self._reference is None:
            point = exact.evaluate(self.enumeration.ref_log_probs, self.enumeration)
            self._reference = {k: float(v) for k, v in point._asdict().items()}
        return self._reference

    def evaluate_policies(self, params) -> exact.Point:
        """Exact figures of policies stacked on a leading axis: each field ``[policies]``."""
        return exact.evaluate_many(self.policy_log_probs(params), self.enumeration)

    def policy_log_probs(self, params) -> np.ndarray:
        """``log pi(y|x)`` of policies stacked on a leading axis, every response: ``[policies, P, N]``."""
        if not hasattr(self, "_log_probs"):
            m, n = self.model, self.spec.n_prompts
            self._log_probs = jax.jit(jax.vmap(lambda p: exact.grid_log_probs(m, p, n)))
        return np.asarray(self._log_probs(params))

    def ppo_hparams(self) -> ppo_mod.RLHFHParams:
        """The three variants stacked on a leading axis: adaptive, fixed, beta ~ 0."""
        h = self.s.hparams
        rows = [
            h,
            h._replace(kl_coef=self.s.fixed_kl_coef, kl_horizon=math.inf),
            h._replace(kl_coef=self.s.hack_kl_coef, kl_horizon=math.inf, learning_rate=self.s.hack_learning_rate),
        ]
        return jax.tree_util.tree_map(lambda *xs: jnp.asarray(xs, jnp.float32), *rows)

    def run_ppo(self) -> dict[str, Any]:
        m, spec, s = self.model, self.spec, self.s
        frozen = ppo_mod.Frozen(self.sft_params, self.reward_model, self.task)
        hparams = self.ppo_hparams()
        keys = jnp.stack([self.keys["ppo"]] * len(PPO_VARIANTS))
        state = jax.vmap(lambda k, h: ppo_mod.init(m, self.sft_params, k, h))(keys, hparams)
        # One compiled chunk of eval_every iterations, reused for the whole run.
        chunk = jax.jit(jax.vmap(lambda f, st, h: ppo_mod.run(m, s.ppo, spec, f, st, h, s.eval_every), (None, 0, 0)))
        points = [self.evaluate_policies(state.params)]
        history = []
        for i in range(s.ppo.iterations // s.eval_every):
            t = time.time()
            state, metrics = chunk(frozen, state, hparams)
            history.append(jax.device_get(metrics))
            points.append(self.evaluate_policies(state.params))
            p = points[-1]
            self.log(
                f"ppo iteration {(i + 1) * s.eval_every}: exact KL "
                + " ".join(f"{v}={float(x):.2f}" for v, x in zip(PPO_VARIANTS, p.kl))
                + " gold " + " ".join(f"{float(x):+.2f}" for x in p.gold) + f" ({time.time() - t:.1f} s)"
            )
        hist = {f: np.concatenate([np.asarray(getattr(h, f)) for h in history], axis=1) for f in ppo_mod.Iteration._fields}
        pts = {f: np.stack([np.asarray(getattr(p, f)) for p in points], axis=1) for f in exact.Point._fields}
        save_checkpoint(self.out, "ppo", {"params": state.params, "kl_coef": state.kl.coef})
        return {
            "variants": list(PPO_VARIANTS),
            "hparams": {f: np.asarray(getattr(hparams, f)).tolist() for f in ppo_mod.RLHFHParams._fields},
            "eval_iterations": [i * s.eval_every for i in range(len(points))],
            "exact": {k: v.tolist() for k, v in pts.items()},
            "history": {k: v.tolist() for k, v in hist.items()},
        }

    def run_dpo(self) -> dict[str, Any]:
        m, ref, pairs = self.model, self.sft_params, self.pairs
        betas = jnp.asarray(self.s.dpo_betas, jnp.float32)
        train = jax.jit(jax.vmap(lambda r, d, k, b: dpo_mod.train_dpo(m, r, d, k, b, self.s.dpo), (None, None, None, 0)))
        params, losses = train(ref, pairs, self.keys["dpo"], betas)
        pts = self.evaluate_policies(params)
        ep, a, b, ga, gb = self.eval_pairs()
        clear = np.abs(np.asarray(ga - gb)) >= 0.1
        acc = []
        implicit = jax.jit(
            jax.vmap(lambda p, beta, r, x, y: dpo_mod.implicit_reward(m, p, r, x, y, beta), (0, 0, None, None, None))
        )
        wins = np.asarray(implicit(params, betas, ref, ep, a) > implicit(params, betas, ref, ep, b))  # [betas, samples]
        acc = [float(np.mean((w == np.asarray(ga > gb))[clear])) for w in wins]
        save_checkpoint(self.out, "dpo", {"params": params})
        return {
            "betas": list(self.s.dpo_betas),
            "exact": {f: np.asarray(getattr(pts, f)).tolist() for f in exact.Point._fields},
            "implicit_reward_accuracy": acc,
            "final_loss": np.asarray(losses)[:, -10:].mean(axis=1).tolist(),
        }

    def run_bon(self) -> dict[str, Any]:
        enum = self.enumeration
        ns = self.s.best_of
        pts = [exact.evaluate(exact.best_of_n_log_probs(enum.ref_log_probs, enum.proxy, n), enum) for n in ns]
        out = {f: [float(getattr(p, f)) for p in pts] for f in exact.Point._fields}
        return {"n": list(ns), "exact": out, "kl_bound": exact.best_of_n_kl_bound(np.asarray(ns)).tolist()}

    def frontier(self, n: int = 80) -> dict[str, list[float]]:
        if self._frontier is None:
            betas = np.geomspace(0.005, 20.0, n)
            front = exact.frontier(self.enumeration, betas)
            self._frontier = {"beta": betas.tolist(), **{f: np.asarray(getattr(front, f)).tolist() for f in exact.Point._fields}}
        return self._frontier


    def run_stage(self, stage: str, command: str | None = None, plots: bool = True) -> dict[str, Any]:
        """Run one stage (its predecessors' products loaded or kept from this object), write its
        record and checkpoint, rewrite the result files; returns the record."""
        from purejaxppo.run.layout import write_json
        from purejaxppo.run.reproduce import environment_info

        if stage not in STAGES:
            raise ConfigError(f"stage {stage!r} is not known; use one of {', '.join(STAGES)}")
        out = self.out
        t = time.time()
        self.log(f"stage {stage} ...")
        record = getattr(self, f"run_{stage}")()
        record["seconds"] = round(time.time() - t, 1)
        if stage in ("sft", "reward"):
            for later in STAGES[STAGES.index(stage) + 1 :]:
                # A later stage's records were made with the products this stage replaced.
                if os.path.exists(_stage_file(out, later)):
                    os.remove(_stage_file(out, later))
        if stage != "sft":
            record["reference"] = self.reference_point()
            record["frontier"] = self.frontier()
        record["environment"] = {**environment_info(), "command": command}
        write_json(_stage_file(out, stage), record)
        self.log(f"stage {stage} done in {record['seconds']} s")
        write_results(out, plots=plots)
        return record


def _pairs_from(d):
    from purejaxppo.rlhf.task import Preferences

    return Preferences(jnp.asarray(d["prompts"]), jnp.asarray(d["chosen"]), jnp.asarray(d["rejected"]))


# ---- running stages and writing results -------------------------------------------------------
def _stage_file(out: str, stage: str) -> str:
    return os.path.join(out, "stages", f"{stage}.json")


def read_stage(out: str, stage: str) -> dict[str, Any] | None:
    path = _stage_file(out, stage)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def replaced_records(out: str, stage: str) -> list[str]:
    """The stage records in ``out`` that running ``stage`` replaces: its own, and for ``sft`` and
    ``reward`` every later stage's (made with the products they replace)."""
    later = STAGES[STAGES.index(stage) + 1:] if stage in ("sft", "reward") else ()
    return [st for st in (stage, *later) if read_stage(out, st) is not None]


def prepare(out: str, settings: DemoSettings | None, stage: str, overwrite: bool = True,
            stages: tuple[str, ...] | None = None) -> DemoSettings:
    """The study's settings: written on its first stage, read back (and checked) on later ones.
    Without ``overwrite``, running ``stages`` (default: ``stage``, every stage for ``demo``) is
    refused where it would replace records already in ``out``."""
    from purejaxppo.run.layout import write_json

    path = os.path.join(out, "settings.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = settings_from_dict(json.load(f))
        if settings is None or stage in ("sft", "demo"):
            settings = settings or saved
        else:
            for name in ("seed", "task", "model", "sft", "pairs", "reward"):
                now, before = getattr(settings, name), getattr(saved, name)
                if now != before:
                    if hasattr(now, "_fields"):  # name the fields of the group that differ
                        changed = ", ".join(f"{name}.{f} {getattr(now, f)} (the study: {getattr(before, f)})"
                                            for f in now._fields if getattr(now, f) != getattr(before, f))
                    else:
                        changed = f"{name} {now} (the study: {before})"
                    raise ConfigError(f"the settings differ from the ones {out}'s earlier stages used: {changed}; "
                                      "use the same settings or a new --out")
    elif settings is None:
        settings = DemoSettings()
    if stage not in ("sft", "demo"):
        for need in NEEDS[stage]:
            if read_stage(out, need) is None:
                raise RunError(f"{out} has no {need} stage; run `purejaxppo rlhf {need} --out {out}` (or `demo`) first")
    check_settings(settings)
    running = stages or (STAGES if stage == "demo" else (stage,))
    held = [] if overwrite else [st for st in STAGES if any(st in replaced_records(out, r) for r in running)]
    if held:
        raise RunError(f"{out} already holds the {', '.join(held)} stage record{'s' if len(held) > 1 else ''}, which "
                       f"running {', '.join(running)} replaces; pass --overwrite to replace "
                       f"{'them' if len(held) > 1 else 'it'}, or choose another --out")
    os.makedirs(os.path.join(out, "stages"), exist_ok=True)
    write_json(path, settings_to_dict(settings))
    return settings


STUDY_FILES = layout.STUDY_FILES


def clear_study(out: str) -> None:
    """Remove a study's files from ``out`` (and nothing else)."""
    from purejaxppo.run.layout import remove_named

    remove_named(out, STUDY_FILES)


def run_stages(
    out: str, settings: DemoSettings | None = None, stages=STAGES, log=print, command: str | None = None,
    overwrite: bool = True, replace: bool = False, exit_on_signal: bool = False,
) -> dict[str, Any]:
    """Run ``stages`` in order into ``out``; rewrite the result files after each. Returns the
    stage records (those on disk included). Without ``overwrite``, stages whose run would replace
    records already in ``out`` (:func:`replaced_records`) are refused before anything runs.

    ``out`` follows a training run's folder rules: it is locked while the stages run (a second
    writer is refused), and a folder holding another kind of run, or files of a study's names
    that no study wrote, is refused. ``replace`` (the demo) starts a new study: one already in
    ``out`` is refused without ``overwrite`` and otherwise removed (its files, and only those),
    once the new settings are checked. With ``exit_on_signal`` (the command line), SIGINT or
    SIGTERM end the process at once with a line naming the stages kept and the commands that
    finish the study."""
    for stage in stages:
        if stage not in STAGES:
            raise ConfigError(f"stage {stage!r} is not known; use one of {', '.join(STAGES)}")
    with layout.locked(out):
        layout.check_out_dir(out, overwrite or not replace, "rlhf")
        if replace and layout.folder_kind(out) == "rlhf":
            check_settings(settings or DemoSettings())  # a study is replaced only by one that can run
            clear_study(out)
        settings = prepare(out, settings, stages[0] if len(stages) == 1 else "demo", overwrite, tuple(stages))
        study = Study(settings, out, log)
        with ExitOnSignal("") if exit_on_signal else contextlib.nullcontext() as on_signal:
            for stage in stages:
                if on_signal is not None:
                    on_signal.message = _interrupted(out, stage, stages)
                study.run_stage(stage, command=command, plots=stage == stages[-1])
    return {st: read_stage(out, st) for st in STAGES}


def _interrupted(out: str, stage: str, stages) -> str:
    """What a signal during ``stage`` leaves, and how to finish the study stage by stage."""
    done = [st for st in STAGES if read_stage(out, st) is not None and st not in stages[stages.index(stage):]]
    rest = " then ".join(f"purejaxppo rlhf {st} --out {out}" for st in stages[stages.index(stage):])
    kept = f"the stages done ({', '.join(done)}) are kept" if done else "no stage was finished"
    return f"\npurejaxppo rlhf: interrupted during stage {stage}; {kept}; to finish the study: {rest}\n"


def write_results(out: str, plots: bool = True) -> None:
    """``results.csv``, ``summary.md`` and (with ``plots``) the plots from the stage records present."""
    from purejaxppo.rlhf import report

    records = {st: read_stage(out, st) for st in STAGES}
    rows = report.result_rows(records)
    try:
        with open(os.path.join(out, "results.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(RESULT_COLUMNS)
            for r in rows:
                w.writerow([r[c] if isinstance(r[c], str) else f"{r[c]:.4f}" for c in RESULT_COLUMNS])
        with open(os.path.join(out, "summary.md"), "w") as f:
            f.write(report.summary_markdown(records))
        if plots:
            report.plots(out, records)
    except OSError as e:  # the stage records are written: the result files are remade from them by the next stage
        raise RunError(f"cannot write the result files in {out}: {e.strerror or e}; the stage records in "
                       f"{out}/stages are intact; free space and run the last stage again") from None
