"""The study's stages for GRPO, RLOO and reward-model ensembles (mixed into
:class:`purejaxppo.rlhf.pipeline.Study`).

* ``grpo`` / ``rloo``: the three KL settings of the PPO stage (adaptive beta with target 1 nat,
  fixed beta, beta ~ 0 at a lower learning rate) as one vmapped program each, run in chunks of
  ``eval_every`` iterations with every policy evaluated exactly between chunks;
* ``ensemble``: ``M`` reward models trained in one vmapped program (each on a bootstrap resample
  of the pairs, its own head initialisation and minibatch order), normalised on reference
  samples; then with beta ~ 0, for each objective (mean, worst case, mean - lambda std; Coste et
  al. 2023, arXiv:2310.02743): PPO and GRPO (one vmapped program per method) and best-of-n
  (exact). The members' disagreement is logged per iteration (sampled) and at each evaluation
  (exact: ``E_pi[std_m proxy_m]``), beside the exact gold.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.rlhf import exact
from purejaxppo.rlhf import group as group_mod
from purejaxppo.rlhf import ppo as ppo_mod
from purejaxppo.rlhf import reward as reward_mod

GROUP_VARIANTS = ("adaptive", "fixed", "beta~0")


def objective_names(penalty: float) -> list[str]:
    """The ensemble objectives, in the order of :func:`objective_settings`."""
    return ["mean", "worst", f"mean-{penalty:g}std"]


def objective_settings(penalty: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(ensemble_penalty [3], ensemble_worst [3])`` for mean, worst case and mean - penalty * std."""
    return jnp.array([0.0, 0.0, penalty], jnp.float32), jnp.array([0.0, 1.0, 0.0], jnp.float32)


def stack_rows(rows) -> Any:
    """NamedTuples of floats -> one NamedTuple of ``[rows]`` float32 arrays."""
    return jax.tree_util.tree_map(lambda *xs: jnp.asarray(xs, jnp.float32), *rows)


def unstack(tree, n: int) -> list:
    """A pytree with a leading axis ``[n]`` -> ``n`` pytrees."""
    return [jax.tree_util.tree_map(lambda a, i=i: a[i], tree) for i in range(n)]


def train_in_chunks(study, chunk, state, hparams, n_chunks: int, every: int, names, tag: str,
                    spread_of=None) -> tuple[Any, dict[str, Any]]:
    """Run ``chunk(state, hparams) -> (state, metrics [runs, every])`` ``n_chunks`` times, every
    policy evaluated exactly before the first and after each (``spread_of(log_probs)``: the
    exact ensemble spread of each policy, when given). Returns ``(state, record)``."""
    lps = study.policy_log_probs(state.params)
    points, spreads, history = [exact.evaluate_many(lps, study.enumeration)], [], []
    if spread_of:
        spreads.append([spread_of(lp) for lp in lps])
    for i in range(n_chunks):
        t = time.time()
        state, metrics = chunk(state, hparams)
        history.append(jax.device_get(metrics))
        lps = study.policy_log_probs(state.params)
        points.append(exact.evaluate_many(lps, study.enumeration))
        if spread_of:
            spreads.append([spread_of(lp) for lp in lps])
        p = points[-1]
        study.log(f"{tag} iteration {(i + 1) * every}: exact KL " + " ".join(f"{v}={x:.2f}" for v, x in zip(names, p.kl))
                  + " gold " + " ".join(f"{x:+.2f}" for x in p.gold) + f" ({time.time() - t:.1f} s)")
    fields = type(history[0])._fields
    hist = {f: np.concatenate([np.asarray(getattr(h, f)) for h in history], axis=1).tolist() for f in fields}
    pts = {f: np.stack([np.asarray(getattr(p, f)) for p in points], axis=1).tolist() for f in exact.Point._fields}
    record = {"variants": list(names), "eval_iterations": [i * every for i in range(len(points))], "exact": pts,
              "history": hist}
    if spread_of:
        record["exact_spread"] = np.asarray(spreads).T.tolist()
    return state, record


class MethodStages:
    """``run_grpo``, ``run_rloo`` and ``run_ensemble`` for the study (needs its ``s``, ``model``,
    ``spec``, ``task``, ``keys``, ``sft_params``, ``reward_model``, ``pairs``, ``enumeration``,
    ``policy_log_probs`` and ``log``)."""

    def group_hparams(self) -> group_mod.GroupHParams:
        """The three variants of the PPO stage, stacked: adaptive, fixed, beta ~ 0."""
        s = self.s
        h = group_mod.GroupHParams(learning_rate=s.hparams.learning_rate, kl_coef=s.hparams.kl_coef,
                                   kl_target=s.hparams.kl_target, kl_horizon=s.hparams.kl_horizon)
        return stack_rows([h, h._replace(kl_coef=s.fixed_kl_coef, kl_horizon=math.inf),
                           h._replace(kl_coef=s.hack_kl_coef, kl_horizon=math.inf, learning_rate=s.hack_learning_rate)])

    def _group_run(self, algo: group_mod.GroupAlgorithm, rm, hparams, key, names, tag, spread_of=None):
        m, s, spec = self.model, self.s, self.spec
        frozen = ppo_mod.Frozen(self.sft_params, rm, self.task)
        n = len(names)
        state = jax.vmap(lambda k, h: group_mod.init(self.sft_params, k, h))(jnp.stack([key] * n), hparams)
        run = jax.jit(jax.vmap(lambda f, st, h: group_mod.run(m, algo, s.group, spec, f, st, h, s.eval_every),
                               (None, 0, 0)))
        return train_in_chunks(self, lambda st, h: run(frozen, st, h), state, hparams,
                               s.group.iterations // s.eval_every, s.eval_every, names, tag, spread_of)

    def _group_stage(self, name: str) -> dict[str, Any]:
        hparams = self.group_hparams()
        state, record = self._group_run(group_mod.ALGORITHMS[name], self.reward_model, hparams, self.keys[name],
                                        GROUP_VARIANTS, name)
        from purejaxppo.rlhf.pipeline import save_checkpoint

        save_checkpoint(self.out, name, {"params": state.params, "kl_coef": state.kl.coef})
        record["hparams"] = {f: np.asarray(getattr(hparams, f)).tolist() for f in group_mod.GroupHParams._fields}
        record["settings"] = self.s.group._asdict()
        return record

    def run_grpo(self) -> dict[str, Any]:
        return self._group_stage("grpo")

    def run_rloo(self) -> dict[str, Any]:
        return self._group_stage("rloo")

    # ---- reward-model ensembles -----------------------------------------------------------------
    def train_members(self):
        """The ensemble: ``(RewardModel with [M] fields, member proxies over every response [M, P, N]
        in float64, train losses [M, steps])``."""
        m, s, spec, ref = self.model, self.s, self.spec, self.sft_params
        k_train, k_norm = jax.random.split(self.keys["ensemble"])
        keys = jax.random.split(k_train, s.ensemble_members)
        train = jax.jit(lambda p, d, k: reward_mod.train_ensemble(m, p, d, k, s.reward))
        params, losses = train(ref, self.pairs, keys)
        normalise = jax.jit(jax.vmap(lambda p, r, k: reward_mod.normalise(m, p, r, k, spec.n_prompts,
                                                                          s.reward.normalise_samples), (0, None, None)))
        rms = normalise(params, ref, k_norm)
        enum = self.enumeration
        score = jax.jit(lambda r, x, y: (exact.all_scores(m, r.params, x, y) - r.shift) / r.scale)
        members = np.stack([np.asarray(score(member, enum.prompts, enum.responses), np.float64)
                            for member in unstack(rms, s.ensemble_members)])
        return rms, members, losses

    def member_accuracy(self, rms) -> tuple[list[float], float]:
        """Held-out gold-order accuracy of each member and of the members' mean (|delta r*| >= 0.1)."""
        ep, a, b, ga, gb = self.eval_pairs()
        m = self.model
        proxy = jax.jit(lambda r, x, y: reward_mod.member_scores(m, r, x, y))
        pa, pb = np.asarray(proxy(rms, ep, a)), np.asarray(proxy(rms, ep, b))
        clear = np.abs(np.asarray(ga - gb)) >= 0.1
        truth = np.asarray(ga > gb)[clear]
        each = [float(np.mean((x > y)[clear] == truth)) for x, y in zip(pa, pb)]
        return each, float(np.mean((pa.mean(0) > pb.mean(0))[clear] == truth))

    def ensemble_best_of_n(self, objectives: np.ndarray, names) -> dict[str, Any]:
        """Best-of-n under each objective ``[O, P, N]``, exactly: the study's figures and the objective's mean."""
        enum, out = self.enumeration, {"n": list(self.s.best_of)}
        for name, obj in zip(names, objectives):
            lps = [exact.best_of_n_log_probs(enum.ref_log_probs, obj, n) for n in self.s.best_of]
            pts = exact.evaluate_many(lps, enum)
            out[name] = {f: np.asarray(getattr(pts, f)).tolist() for f in exact.Point._fields}
            out[name]["objective"] = [exact.expectation(lp, obj) for lp in lps]
        return out

    def run_ensemble(self) -> dict[str, Any]:
        s = self.s
        rms, members, losses = self.train_members()
        each, of_mean = self.member_accuracy(rms)
        names = objective_names(s.ensemble_penalty)
        mean, std = members.mean(0), members.std(0)
        objectives = np.stack([mean, members.min(0), mean - s.ensemble_penalty * std])
        record = {"members": s.ensemble_members, "penalty": s.ensemble_penalty, "objectives": names,
                  "member_accuracy": each, "mean_accuracy": of_mean,
                  "final_train_loss": np.asarray(losses)[:, -10:].mean(axis=1).tolist(),
                  "reference_spread": exact.expectation(self.enumeration.ref_log_probs, std),
                  "bon": self.ensemble_best_of_n(objectives, names)}
        spread_of = lambda lp: exact.expectation(lp, std)
        penalty, worst = objective_settings(s.ensemble_penalty)
        hack = s.hparams._replace(kl_coef=s.hack_kl_coef, kl_horizon=math.inf, learning_rate=s.hack_learning_rate)
        ppo_h = stack_rows([hack._replace(ensemble_penalty=float(p), ensemble_worst=float(w)) for p, w in zip(penalty, worst)])
        record["ppo"] = self._ensemble_ppo(rms, ppo_h, names, spread_of)
        gh = group_mod.GroupHParams(learning_rate=s.hack_learning_rate, kl_coef=s.hack_kl_coef, kl_horizon=math.inf)
        grpo_h = stack_rows([gh._replace(ensemble_penalty=float(p), ensemble_worst=float(w)) for p, w in zip(penalty, worst)])
        _, record["grpo"] = self._group_run(group_mod.GRPO, rms, grpo_h, self.keys["grpo"], names, "grpo-ensemble",
                                            spread_of)
        from purejaxppo.rlhf.pipeline import save_checkpoint

        save_checkpoint(self.out, "ensemble", {"reward": rms})
        return record

    def _ensemble_ppo(self, rms, hparams, names, spread_of) -> dict[str, Any]:
        m, s, spec = self.model, self.s, self.spec
        frozen = ppo_mod.Frozen(self.sft_params, rms, self.task)
        keys = jnp.stack([self.keys["ppo"]] * len(names))
        state = jax.vmap(lambda k, h: ppo_mod.init(m, self.sft_params, k, h))(keys, hparams)
        run = jax.jit(jax.vmap(lambda f, st, h: ppo_mod.run(m, s.ppo, spec, f, st, h, s.eval_every), (None, 0, 0)))
        _, record = train_in_chunks(self, lambda st, h: run(frozen, st, h), state, hparams,
                                    s.ppo.iterations // s.eval_every, s.eval_every, names, "ppo-ensemble", spread_of)
        return record
