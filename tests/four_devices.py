"""Everything the tests run on 4 fake CPU devices, in one child process (one start-up of JAX).

Run by ``tests/test_devices.py`` as ``python tests/four_devices.py OUT CONFIGS_JSON`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``. Writes to ``OUT``:

- ``dp.npz``: metrics and final parameters of one-device and data-parallel runs of each config;
- ``sweep.npz``: the metrics of a sweep of 6 agents padded to 8 over the 4 devices;
- ``pbt.npz``: the lineage of the same 6 agents as a PBT population of GRU policies over the 4 devices;
- ``cli.json``: exit codes and output of data-parallel ``purejaxppo train`` runs (run, resume, bad split).
"""

import json
import os
import shutil
import sys

import jax
import numpy as np
from helpers import run_main
from jax.sharding import PartitionSpec

from purejaxppo import PPOConfig, make_data_parallel_train, make_train, make_trainer
from purejaxppo.scale.agents import run_agents
from purejaxppo.scale.pbt import PBTConfig, run_pbt
from purejaxppo.scale.plan import Distribution, make_plan, stack_hparams

assert jax.device_count() == 4, jax.devices()
out_dir, specs = sys.argv[1], json.loads(sys.argv[2])

# ---- data parallelism against one device
out = {}
for name, config in specs["data_parallel"].items():
    config = PPOConfig.from_dict(config)
    key = jax.random.key(3)
    one_state, one = jax.jit(make_train(config))(key)  # the ordinary program, on device 0
    state, four = jax.jit(make_data_parallel_train(config))(key)
    assert state.obs.sharding.spec == PartitionSpec("envs") and len(state.obs.sharding.device_set) == 4
    assert state.obs.shape == one_state.obs.shape
    for k in one:
        out[f"{name}|one|{k}"] = np.asarray(one[k])
        out[f"{name}|four|{k}"] = np.asarray(four[k])
    for i, (a, b) in enumerate(zip(jax.tree.leaves(one_state.params), jax.tree.leaves(state.params))):
        out[f"{name}|one|param{i}"] = np.asarray(a)
        out[f"{name}|four|param{i}"] = np.asarray(b)
np.savez(os.path.join(out_dir, "dp.npz"), **out)

# ---- a sweep sharded over the devices: sweep(config, num_seeds=3, grid={"lr": [1e-3, 3e-3]}),
# 6 agents padded to 8, 2 per device
config = PPOConfig.from_dict(specs["sweep"])
plan = make_plan(config, 3, {"lr": [1e-3, 3e-3]})
states, metrics = run_agents(make_trainer(config), plan.agent_keys(), stack_hparams(config, plan))
sharding = states.update_step.sharding
assert {d.id for d in sharding.device_set} == {0, 1, 2, 3} and sharding.spec == PartitionSpec("agents"), sharding
assert states.update_step.shape == (8,)
np.savez(os.path.join(out_dir, "sweep.npz"), **{k.replace("/", "|"): v for k, v in metrics.items()})

# ---- the same 6 agents as a PBT population of recurrent policies, sharded: selection gathers across devices
gru = config.replace(policy="gru", gru_hidden=8)
space = {"lr": Distribution("log-uniform", (1e-4, 1e-2))}
states, metrics, record = run_pbt(make_trainer(gru), plan.agent_keys(), stack_hparams(gru, plan),
                                  PBTConfig(interval=2, fraction=0.34), space, jax.random.key(5), chunk_updates=3)
assert states.hidden.sharding.spec == PartitionSpec("agents") and states.hidden.shape[0] == 8
np.savez(os.path.join(out_dir, "pbt.npz"), parent=record.parent, lr=record.hparams["lr"],
         returns=metrics["charts/episodic_return"])

# ---- the command line, data-parallel: a run, a resume from an earlier checkpoint, an uneven split
args, steps = specs["cli_args"], str(8 * 32 * 15)
run = os.path.join(out_dir, "dp_run")
cli = {"first": run_main("train", *args, "--total-timesteps", steps, "--checkpoint-every", "5", "--out", run)._asdict()}
shutil.copy(os.path.join(run, "metrics.csv"), os.path.join(out_dir, "first_metrics.csv"))
shutil.rmtree(os.path.join(run, "checkpoints", "15"))  # as if stopped after update 10, before its summary
os.remove(os.path.join(run, "summary.json"))
cli["again"] = run_main("train", *args, "--total-timesteps", steps, "--resume", "--out", run)._asdict()
cli["bad"] = run_main("train", *args, "--num-envs", "6", "--num-minibatches", "1",
                      "--out", os.path.join(out_dir, "bad"))._asdict()
with open(os.path.join(out_dir, "cli.json"), "w") as f:
    json.dump(cli, f)
