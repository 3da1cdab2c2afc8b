"""The scanned epoch both stages run: every example once, shuffled, in one jitted `lax.scan`.

The epoch draws a permutation of the examples, cuts it into `num_batches` batches of exactly
`batch_size` rows (the last one padded with row 0 and marked not real, never dropped), gives
each step its own key, fold_in(step key, step), and scans the stage's step over the batches.
Randomness is thus a pure function of the epoch's key: a run resumed from a checkpoint replays
exactly the epochs an uninterrupted run would.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from alignrec_jax.training.parallel import Parallel

# step(state, data, rows [B] int32, real [B] bool, key) -> (state, {term: scalar})
Step = Callable[[Any, Any, jax.Array, jax.Array, jax.Array], tuple[Any, dict[str, jax.Array]]]


_PREPARE_STREAM = 0x5EED  # fold_in constant of the `prepare` key


def make_epoch(
  step: Step,
  *,
  num_examples: int,
  batch_size: int,
  progress: Callable[[jax.Array], None] | None = None,
  parallel: Parallel | None = None,
  prepare: Callable[[Any, jax.Array], Any] | None = None,
) -> Callable:
  """A jitted `(state, data, key) -> (state, mean loss terms)` running one whole epoch.

  `data` holds every array the step reads (an argument, never closed over: closure constants
  make XLA constant-fold the backward and compile for minutes); only Python scalars are closed
  over. The input state is donated (its buffers hold the output state), so the caller must not
  use it afterwards, nor let a background checkpoint write still read it.

  Args:
    step: the pure per-batch step; `rows` index the examples, `real` is False on padding.
    num_examples: examples in one epoch (training interactions, or items).
    batch_size: rows per step.
    progress: called on the host with each step's index as the step starts (a
      `jax.debug.callback`, which carries no data back: the results are the same without it).
    parallel: the devices: each step's batch rows are split across them (`parallel.py`);
      the data come in replicated, the state as `parallel.place_state` lays it out. None: one
      device.
    prepare: `(data, key) -> data`, run once at the epoch's start with a key of its own (e.g.
      FREEDOM's freshly pruned graph); the steps read what it returns.
  """
  num_batches = math.ceil(num_examples / batch_size)
  padding = num_batches * batch_size - num_examples
  placed = parallel is not None and parallel.mesh is not None

  @functools.partial(jax.jit, donate_argnums=0)
  def epoch(state, data, key: jax.Array):
    if prepare is not None:
      # folded in, not split off: the order and step keys stay those of every other model.
      data = prepare(data, jax.random.fold_in(key, _PREPARE_STREAM))
    order_key, step_key = jax.random.split(key)
    order = jax.random.permutation(order_key, num_examples)
    rows = jnp.concatenate([order, jnp.zeros(padding, order.dtype)]).reshape(num_batches, -1)
    real = (jnp.arange(num_batches * batch_size) < num_examples).reshape(num_batches, -1)
    keys = jax.vmap(functools.partial(jax.random.fold_in, step_key))(jnp.arange(num_batches))
    if parallel is not None:
      rows, real = parallel.split_batches((rows, real))

    def body(state, xs):
      index, *batch = xs
      if progress is not None:
        jax.debug.callback(progress, index)
      return step(state, data, *batch)

    state, terms = jax.lax.scan(body, state, (jnp.arange(num_batches), rows, real, keys))
    if placed:
      # On several devices the state leaves in the layout it came in: left to itself, XLA may
      # shard an output (after a partitioned propagation, the feature table along its rows),
      # and the next epoch would then compile again for the new input layout.
      state = parallel.place_state(state)
    return state, jax.tree.map(jnp.mean, terms)

  return epoch


class ScannedEpoch:
  """A stage's trainer gets its epoch from this mixin: `make_epoch` of its `train_step`, over
  its `num_examples` in batches of `batch_size`, on its `parallel` devices, after its
  `prepare_epoch` (None: nothing to prepare)."""

  prepare_epoch = None

  def make_train_epoch(self, progress: Callable[[jax.Array], None] | None = None) -> Callable:
    """The jitted, state-donating `(state, data, key) -> (state, mean terms)` of one epoch."""
    return make_epoch(
      self.train_step,
      num_examples=self.num_examples,
      batch_size=self.batch_size,
      progress=progress,
      parallel=self.parallel,
      prepare=self.prepare_epoch,
    )
