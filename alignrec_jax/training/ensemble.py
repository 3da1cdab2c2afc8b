"""Many stage-2 runs in one compiled program: the training loop over K runs under `jax.vmap`.

Each run (a member) is the run `stage2.train_and_evaluate` would make of its config: its seed
and `optim.lr` are its own, everything else is shared, the graphs and data included. The loop
(`loop.train` with `Task.members`) gives each member the same initial key and epoch keys as a
run alone (so the same permutations and negatives), its own early stopping, evaluation and
non-finite handling, and its own workdir records (metrics.jsonl, summary.json). The learning
rate is the one thing the members' optimisers hold apart: each member's chain is the config's
chain at lr 1 followed by a scale whose factor lives in the member's optimiser state
(`member_lr`), so one transformation serves every member and the result equals the run alone
to float rounding (lr * (1 * u) against (lr * u)).

A member that has stopped (early, or on a non-finite loss) keeps its state: the vmapped epoch
still computes its update, which is then discarded. Every member is evaluated in one vmapped
pass. The point is the accelerator, where one small run leaves the device idle; on a CPU the
members' work adds up. An ensemble keeps no checkpoint: a killed one starts again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from alignrec_jax import models
from alignrec_jax.errors import ConfigError
from alignrec_jax.evaluation import evaluate_members
from alignrec_jax.training import loop, stage2
from alignrec_jax.training import stage2_setup as setup
from alignrec_jax.training.epoch import make_epoch


class MemberLrState(NamedTuple):
  lr: jax.Array  # this member's learning rate, a scalar (stacked over members: [K])


def member_lr() -> optax.GradientTransformation:
  """Scales updates by the learning rate its state holds (1 until set; see `train_members`)."""

  def init(params):
    del params
    return MemberLrState(lr=jnp.ones((), jnp.float32))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: state.lr * u, updates), state

  return optax.GradientTransformation(init, update)


def _set_lr(opt_state, lrs: jax.Array):
  """The stacked optimiser state with every MemberLrState's lr set to `lrs` [K]."""
  return jax.tree.map(
    lambda s: MemberLrState(lr=lrs) if isinstance(s, MemberLrState) else s,
    opt_state,
    is_leaf=lambda s: isinstance(s, MemberLrState),
  )


def _keep(new, old, keep: jax.Array):
  """`new` for the members `keep` marks (leading axis), `old` for the others."""
  return jax.tree.map(
    lambda n, o: jnp.where(keep.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
  )


def members_epoch(member_epoch: Callable) -> Callable:
  """The jitted, state-donating epoch of K members from one member's epoch function: a member
  that is not active, or whose loss is not finite, keeps its state."""

  def epoch(states, data, keys: jax.Array, active: jax.Array):
    new, terms = jax.vmap(member_epoch, in_axes=(0, None, 0))(states, data, keys)
    return _keep(new, states, active & jnp.isfinite(terms["loss"])), terms

  return jax.jit(epoch, donate_argnums=0)


def member_configs(
  config: ml_collections.ConfigDict, seeds: Sequence[int], lrs: Sequence[float]
) -> list[ml_collections.ConfigDict]:
  """`config` with each (seed, optim.lr): the members of one ensemble."""
  if len(seeds) != len(lrs):
    raise ValueError(f"one lr per seed: {len(seeds)} seeds, {len(lrs)} lrs")
  members = []
  for seed, lr in zip(seeds, lrs, strict=True):
    member = config.copy_and_resolve_references()
    member.seed, member.optim.lr = seed, lr
    members.append(member)
  return members


def check_members(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """ConfigError unless the configs can train together: the same but for seed and optim.lr,
  on one device, and a model whose graph is not pruned every epoch."""
  first = configs[0]
  stage2.check_config(first)
  for config in configs[1:]:
    a, b = (json.loads(c.to_json()) for c in (first, config))
    for c in (a, b):
      c.pop("seed")
      c["optim"].pop("lr")
    if a != b:
      raise ConfigError("vmapped runs differ in seed and optim.lr only; these differ in more")
  if first.parallel.num_devices not in (0, 1) or jax.device_count() > 1:
    raise ConfigError("the vmapped ensemble runs on one device (parallel.num_devices=1)")
  if models.get(first.model.name).prunes_graph:
    raise ConfigError(
      f"model {first.model.name!r}: a per-epoch pruned graph is not vmapped yet; train its "
      "runs one at a time"
    )


def train_members(
  configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]
) -> list[dict[str, Any]]:
  """Trains the K runs `configs[k]` in `workdirs[k]` at once, each to its early stopping.

  Args:
    configs: the runs' configs, equal but for their seeds and `optim.lr`.
    workdirs: each run's folder; the shared data (for built-in data) is set up in the first.

  Returns:
    Each run's summary (as `train_and_evaluate` returns it); "diverged_at" (an epoch) for a run
    whose loss stopped being finite. A run that diverged before its first evaluation has no
    "valid" and writes no summary.
  """
  if len(configs) != len(workdirs) or not configs:
    raise ValueError(f"one workdir per config: {len(configs)} configs, {len(workdirs)} workdirs")
  check_members(configs)
  unit = configs[0].copy_and_resolve_references()
  unit.optim.lr = 1.0
  exp = setup.build_experiment(unit, workdirs[0])
  stage2.log_setup(exp)
  rec = stage2.build_recommender(unit, exp)
  rec = dataclasses.replace(rec, optimizer=optax.chain(rec.optimizer, member_lr()))
  lrs = jnp.asarray([c.optim.lr for c in configs], jnp.float32)

  def init_states(keys: jax.Array):
    states = jax.vmap(rec.init_state, in_axes=(0, None))(keys, exp.train_data)
    return states.replace(opt_state=_set_lr(states.opt_state, lrs))

  embed = jax.jit(jax.vmap(rec.make_embed(), in_axes=(0, None)))
  ks = tuple(unit.eval.ks)

  def evaluate(params, improves: Callable[[int, dict], bool]) -> list[dict[str, Any]]:
    # Every member in one pass (a stopped member's scores are computed and ignored): on an
    # accelerator K small evaluations one after another would take longer than the epoch.
    user_emb, item_emb = embed(params, exp.train_data)
    results = evaluate_members(user_emb, item_emb, exp.eval_data, ks=ks)
    improving = [m for m, r in enumerate(results) if improves(m, r)]
    if improving and exp.short_history_eval_data is not None:
      short = evaluate_members(user_emb, item_emb, exp.short_history_eval_data, ks=ks)
      for m in improving:
        results[m].update(valid_short=short[m]["valid"], test_short=short[m]["test"])
    return results

  epoch = make_epoch(rec.train_step, num_examples=rec.num_examples, batch_size=rec.batch_size)
  task = loop.Task(
    name="stage 2",
    init_state=init_states,
    train_epoch=members_epoch(epoch),
    data=exp.train_data,
    examples_per_epoch=rec.num_examples,
    evaluate=evaluate,
    members=len(configs),
  )
  runs = [
    loop.Run(
      workdir=workdir,
      seed=config.seed,
      identity=stage2.run_identity(config, workdir),
      config=json.loads(config.to_json()),
    )
    for config, workdir in zip(configs, workdirs, strict=True)
  ]
  _, summaries = loop.train(
    task,
    runs,
    max_epochs=unit.train.max_epochs,
    early_stopping=stage2.early_stopping(unit),
    ks=ks,
  )
  return summaries
