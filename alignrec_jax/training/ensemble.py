"""Many stage-2 runs in one compiled program: `jax.vmap` over K members' parameters, optimiser
states, seeds and learning rates, the graphs and data shared.

Each member is the run `train_and_evaluate` would make of the config with the member's seed and
`optim.lr`: the same initial key, the same epoch keys (so the same permutations and negatives),
the same optimiser. The learning rate is the one thing the members' optimisers hold apart: each
member's chain is the config's chain at lr 1 followed by a scale whose factor lives in the
member's optimiser state (`member_lr`), so one transformation serves every member and the
result equals the single run's to float rounding (lr * (1 * u) against (lr * u)).

Early stopping is per member, on the host after each epoch: every member is evaluated as the
single run is, all members in one vmapped pass; a member that has stopped keeps its state (the
vmapped epoch still computes its update, which is then discarded: masked) and its best epoch's
metrics. The point is the accelerator, where one small run leaves the device idle; on a CPU the
members' work adds up. No checkpoints are written: a killed ensemble starts again (the sweep
writes each member's summary when all have finished).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignrec_jax.errors import ConfigError
from alignrec_jax.evaluation import evaluate_members
from alignrec_jax.training import reporting, stage2
from alignrec_jax.training.early_stopping import EarlyStopping
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


def _keep_stopped(new, old, active: jax.Array):
  """`new` for the active members (leading axis), `old` for the stopped ones: their updates are
  masked."""
  return jax.tree.map(
    lambda n, o: jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
  )


def train_members(
  config: ml_collections.ConfigDict,
  workdir: str,
  seeds: Sequence[int],
  lrs: Sequence[float],
) -> list[dict[str, Any]]:
  """Trains the K members (seeds[k], lrs[k]) of `config` at once, each to its early stopping.

  Args:
    config: the experiment config (its seed and optim.lr are the members' instead).
    workdir: the data's folder for built-in data (as `train_and_evaluate`'s).
    seeds, lrs: one per member.

  Returns:
    Per member, the summary `train_and_evaluate` returns (without a checkpoint path): epochs
    run, best epoch and the best epoch's metrics per split; "diverged_at" (an epoch) for a
    member whose loss stopped being finite.
  """
  if len(seeds) != len(lrs) or not seeds:
    raise ValueError(f"one lr per seed, and at least one: {len(seeds)} seeds, {len(lrs)} lrs")
  stage2.check_config(config)
  if config.parallel.num_devices not in (0, 1) or jax.device_count() > 1:
    raise ConfigError("the vmapped ensemble runs on one device (parallel.num_devices=1)")
  if config.model[config.model.name].get("edge_dropout", 0.0):
    raise ConfigError(
      f"model {config.model.name!r}: a per-epoch pruned graph is not vmapped yet; train its "
      "runs one at a time"
    )
  unit = config.copy_and_resolve_references()
  unit.optim.lr = 1.0
  exp = stage2.build_experiment(unit, workdir)
  rec = stage2.build_recommender(unit, exp)
  rec = dataclasses.replace(rec, optimizer=optax.chain(rec.optimizer, member_lr()))
  embed = jax.jit(jax.vmap(rec.make_embed(), in_axes=(0, None)))
  ks = tuple(config.eval.ks)
  k = len(seeds)
  # Each member's keys as a run alone derives them: (init key, root key) = split(key(seed)).
  init_keys, root_keys = jax.vmap(jax.random.split)(jax.vmap(jax.random.key)(jnp.asarray(seeds))).T
  states = jax.vmap(rec.init_state, in_axes=(0, None))(init_keys, exp.train_data)
  states = states.replace(opt_state=_set_lr(states.opt_state, jnp.asarray(lrs, jnp.float32)))
  epoch_fn = make_epoch(rec.train_step, num_examples=rec.num_examples, batch_size=rec.batch_size)
  vmapped = jax.jit(jax.vmap(epoch_fn, in_axes=(0, None, 0)))
  stopping = [
    EarlyStopping(patience=config.train.patience, metric=config.train.select_metric)
    for _ in range(k)
  ]
  active = np.ones(k, bool)
  best: list[dict[str, Any]] = [{} for _ in range(k)]
  epochs_run = [0] * k
  for epoch in range(config.train.max_epochs):
    if not active.any():
      break
    start = time.perf_counter()
    epoch_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(root_keys, epoch)
    new_states, terms = vmapped(states, exp.train_data, epoch_keys)
    # A member whose loss is no longer finite stops here, its last finite state kept (a run
    # alone would end with TrainingDiverged); the others go on.
    diverged = active & ~np.isfinite(np.asarray(terms["loss"]))
    for m in np.flatnonzero(diverged):
      reporting.warn(
        f"ensemble member {m} (seed {seeds[m]}, lr {lrs[m]}): non-finite loss in "
        f"epoch {epoch}; it stops with its best epoch so far"
      )
      best[m].setdefault("diverged_at", epoch)
    active &= ~diverged
    states = _keep_stopped(new_states, states, jnp.asarray(active))
    trained = time.perf_counter()
    members = np.flatnonzero(active)
    # Every member in one pass (a stopped member's scores are computed and ignored): on an
    # accelerator K small evaluations one after another would take longer than the epoch.
    user_emb, item_emb = embed(states.params, exp.train_data)
    member_results = evaluate_members(user_emb, item_emb, exp.eval_data, ks=ks)
    improving = [m for m in members if stopping[m].improves(member_results[m])]
    if improving and exp.short_history_eval_data is not None:
      short = evaluate_members(user_emb, item_emb, exp.short_history_eval_data, ks=ks)
      for m in improving:
        member_results[m].update(valid_short=short[m]["valid"], test_short=short[m]["test"])
    for m in members:
      results = member_results[m]
      stopped = stopping[m].update(epoch, results)
      epochs_run[m] = epoch + 1
      if stopping[m].improved:
        best[m] = {"best_epoch": epoch, **results}
      if stopped:
        active[m] = False
    reporting.log(
      f"ensemble epoch {epoch}: {int(active.sum())} of {k} members still training; best valid "
      f"{config.train.select_metric} "
      + " ".join(f"{stopping[m].best_score:.4f}" for m in range(k))
      + f"; train {trained - start:.2f} s, evaluation {time.perf_counter() - trained:.2f} s"
    )
  return [{"epochs_run": epochs_run[m], **best[m]} for m in range(k)]
