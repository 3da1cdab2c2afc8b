"""Stage-2 training: state, the jitted epoch (one `lax.scan`), and the epoch loop.

Randomness is a pure function of (seed, epoch, step): the epoch's key is fold_in(seed, epoch),
each step's negatives use fold_in(epoch key, step). A run resumed from the checkpoint of epoch e
therefore replays exactly the epochs an uninterrupted run would, and ends bit-identical.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from alignrec_jax import models, reporting
from alignrec_jax.checkpoint import Checkpointer
from alignrec_jax.early_stopping import EarlyStopping
from alignrec_jax.evaluate import evaluate
from alignrec_jax.experiment import Experiment, TrainData
from alignrec_jax.experiment import build as build_experiment
from alignrec_jax.models import Batch

TrainState = train_state.TrainState


class TrainingDiverged(RuntimeError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


def create_train_state(module: nn.Module, params: dict[str, Any],
                       tx: optax.GradientTransformation) -> TrainState:
  """A TrainState whose step is already an int32 array, as every later state's is.

  (A Python int step would give the jitted epoch a different argument type on its first call
  than on the next ones, and so a second compilation.)
  """
  state = TrainState.create(apply_fn=module.apply, params=params, tx=tx)
  return state.replace(step=jnp.zeros((), jnp.int32))


def make_optimizer(config: ml_collections.ConfigDict, *, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
  """Adam with the reference's per-epoch decay: lr * decay^(epoch / decay_epochs).

  The reference steps a LambdaLR once per epoch, so the rate is constant within an epoch; here
  the schedule reads the epoch off the step count, which keeps it a pure function of the state.
  """

  def schedule(count):
    epoch = (count // steps_per_epoch).astype(jnp.float32)
    return config.lr * config.lr_decay ** (epoch / config.lr_decay_epochs)

  return optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)


def init_params(module: nn.Module, data: TrainData, key: jax.Array, *,
                trainable_features: bool) -> dict[str, Any]:
  """{"net": module params} plus {"features": F} when F is fine-tuned (the reference)."""
  variables = jax.jit(module.init)(key, data.graphs, data.features)
  params = {"net": variables["params"]}
  if trainable_features and data.features is not None:
    # A copy: the epoch donates the state's buffers, and data.features must outlive them.
    params["features"] = jnp.array(data.features, copy=True)
  return params


def make_train_step(module: nn.Module, objective: Callable, *, batch_size: int,
                    loss_weights: dict[str, float]) -> Callable:
  """The pure step `(state, data, rows, mask, key) -> (state, loss terms)` on one batch.

  `rows` [B] index the training interactions, `mask` [B] is 0 on padding; the negatives are
  sampled on device from `key`. A pure function of its arguments, so it can be sharded.
  """

  def loss_fn(params, data: TrainData, batch: Batch):
    features = params.get("features", data.features)
    emb = module.apply({"params": params["net"]}, data.graphs, features)
    return objective(emb, features, batch, batch_size=batch_size, **loss_weights)

  def train_step(state: TrainState, data: TrainData, rows: jax.Array, mask: jax.Array,
                 key: jax.Array):
    users = data.train_users[rows]
    batch = Batch(users=users, pos_items=data.train_items[rows],
                  neg_items=data.sampler.sample(key, users), mask=mask)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, data, batch)
    return state.apply_gradients(grads=grads), {"loss": loss, **terms}

  return train_step


def make_train_epoch(module: nn.Module, objective: Callable, *, batch_size: int,
                     num_train: int, loss_weights: dict[str, float]) -> Callable:
  """A jitted `(state, data, key) -> (state, mean loss terms)` running one whole epoch.

  Every training interaction is used once, in a shuffled order; the last partial batch is
  padded and masked (never dropped). Only Python scalars are closed over; arrays are arguments.
  The input state is donated (its buffers hold the output state), so the caller must not use it
  afterwards, nor let a background checkpoint write still read it.
  """
  num_batches = math.ceil(num_train / batch_size)
  train_step = make_train_step(module, objective, batch_size=batch_size,
                               loss_weights=loss_weights)

  @functools.partial(jax.jit, donate_argnums=0)
  def train_epoch(state: TrainState, data: TrainData, key: jax.Array):
    order_key, sample_key = jax.random.split(key)
    order = jax.random.permutation(order_key, num_train)
    padding = num_batches * batch_size - num_train
    rows = jnp.concatenate([order, jnp.zeros(padding, order.dtype)]).reshape(num_batches, -1)
    mask = (jnp.arange(num_batches * batch_size) < num_train).astype(jnp.float32)
    step_keys = jax.vmap(functools.partial(jax.random.fold_in, sample_key))(
        jnp.arange(num_batches))

    def body(state, xs):
      return train_step(state, data, *xs)

    state, terms = jax.lax.scan(body, state, (rows, mask.reshape(num_batches, -1), step_keys))
    return state, jax.tree.map(jnp.mean, terms)

  return train_epoch


def make_embed(module: nn.Module) -> Callable:
  """Jitted (params, data) -> (user [U, d], item [I, d]) final embeddings for scoring."""

  @jax.jit
  def embed(params, data: TrainData):
    emb = module.apply({"params": params["net"]}, data.graphs, params.get("features",
                                                                           data.features))
    return emb.final()

  return embed


def finite_terms(terms: dict[str, jax.Array], *, epoch: int, checkpointer: Checkpointer,
                 directory: str, error: type[Exception] = TrainingDiverged,
                 stage: str = "") -> dict[str, float]:
  """An epoch's loss terms as floats; `error` if any is NaN or Inf, naming the last good state."""
  values = {k: float(v) for k, v in terms.items()}
  if not all(math.isfinite(v) for v in values.values()):
    raise error(f"{stage}non-finite loss in epoch {epoch} ({values}); the checkpoint of epoch "
                f"{checkpointer.latest_epoch()} in {directory} is the last good state")
  return values


def _flat(split_metrics: dict[str, dict[str, float]]) -> dict[str, float]:
  return {f"{split}/{k}": v for split, m in split_metrics.items() for k, v in m.items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains to early stopping (or max_epochs), resuming from `workdir` when it holds a run.

  Returns:
    {"best_epoch", "epochs_run", "valid": {...}, "test": {...}} at the best validation epoch.
  """
  os.makedirs(workdir, exist_ok=True)
  exp: Experiment = build_experiment(config, workdir)
  reporting.log(exp.dataset.summary())
  reporting.log(f"stage-2 features: {exp.feature_description}")
  reporting.log("set-up seconds: " + ", ".join(f"{k} {v:.2f}"
                                                for k, v in exp.setup_seconds.items()))
  return run_training(config, workdir, exp)


def run_training(config: ml_collections.ConfigDict, workdir: str, exp: Experiment
                 ) -> dict[str, Any]:
  """The epoch loop over a built experiment (see `train_and_evaluate`)."""
  dataset = exp.dataset
  num_train = len(dataset.train)
  steps_per_epoch = math.ceil(num_train / config.train.batch_size)
  module, objective = models.build(config.model, num_users=dataset.num_users,
                                   num_items=dataset.num_items)
  init_key, root_key = jax.random.split(jax.random.key(config.seed))
  params = init_params(module, exp.train_data, init_key,
                       trainable_features=config.model.trainable_features)
  state = create_train_state(module, params,
                             make_optimizer(config.optim, steps_per_epoch=steps_per_epoch))
  stopper = EarlyStopping(patience=config.train.patience)
  start_epoch = 0

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  restored = checkpointer.restore_latest(state)
  if restored is not None:
    state, meta = restored
    stopper = EarlyStopping.from_json(meta["early_stopping"])
    start_epoch = meta["epoch"] + 1
    reporting.log(f"resumed from the checkpoint of epoch {meta['epoch']} in {workdir}")
    if meta.get("stopped"):
      reporting.log("that run had already stopped early; nothing left to train")
  metrics_log = reporting.MetricsLog(os.path.join(workdir, "metrics.jsonl"),
                                     resume_from_epoch=start_epoch)

  train_epoch = make_train_epoch(module, objective, batch_size=config.train.batch_size,
                                 num_train=num_train, loss_weights=config.loss.to_dict())
  embed = make_embed(module)
  ks = tuple(config.eval.ks)
  select = config.train.select_metric
  stopped = restored is not None and restored[1].get("stopped", False)
  epoch = start_epoch - 1
  try:
    for epoch in range(start_epoch, config.train.max_epochs if not stopped else start_epoch):
      # The epoch donates the state's buffers: the previous checkpoint must be fully written
      # (saves are synchronous, so this is a guard should they become asynchronous).
      checkpointer.wait()
      tick = time.perf_counter()
      state, terms = train_epoch(state, exp.train_data, jax.random.fold_in(root_key, epoch))
      terms = finite_terms(terms, epoch=epoch, checkpointer=checkpointer, directory=workdir)
      train_seconds = time.perf_counter() - tick

      tick = time.perf_counter()
      embeddings = embed(state.params, exp.train_data)
      results = evaluate(*embeddings, exp.eval_data, ks=ks)
      if exp.short_history_eval_data is not None and results["valid"][select] > (
          stopper.best_score):
        # Only the best epoch's metrics are reported, so only improving epochs need these.
        short = evaluate(*embeddings, exp.short_history_eval_data, ks=ks)
        results.update(valid_short=short["valid"], test_short=short["test"])
      eval_seconds = time.perf_counter() - tick
      stopped = stopper.update(epoch, results["valid"][select], results)
      if (stopped or (epoch + 1) % config.train.checkpoint_every == 0
          or epoch + 1 == config.train.max_epochs):
        checkpointer.save(epoch, state, {"epoch": epoch, "stopped": stopped,
                                         "early_stopping": stopper.to_json(),
                                         "config": config.to_json()})
      metrics_log.write({"epoch": epoch, **terms, **_flat(results),
                         "train_seconds": train_seconds, "eval_seconds": eval_seconds})
      reporting.log(reporting.epoch_line(epoch, terms, results["valid"], results["test"],
                                         train_seconds=train_seconds,
                                         eval_seconds=eval_seconds, improved=stopper.improved,
                                         metric=select))
      if stopped:
        break
  finally:
    checkpointer.wait()
    checkpointer.close()

  best = stopper.best_metrics
  summary = {"best_epoch": stopper.best_epoch, "epochs_run": epoch + 1, **best}
  if best:
    reporting.log(f"best validation {select} at epoch {stopper.best_epoch} "
                  f"({epoch + 1} epochs run); metrics of that epoch:\n"
                  + reporting.summary_table(best, ks=ks))
  return summary
