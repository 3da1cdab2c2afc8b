"""Timing helpers shared by the benchmarks: medians after a warm-up, parts timed in a loop,
stage-2 epochs, and XLA's cost analysis."""

import math
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


def median_seconds(fn, *args, repeats: int) -> float:
  """Median seconds of `repeats` calls after a warm-up one, each ended by block_until_ready."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


class Part(NamedTuple):
  """A pure function (e.g. one part of the training step) and the arguments it is timed on."""

  fn: Callable
  args: tuple
  carries: bool = False  # fn returns its next arguments


def in_loop_seconds(part: Part, *, iterations: int, repeats: int) -> float:
  """Seconds per call of the part when called `iterations` times inside one program.

  As in the scanned epoch, buffers are allocated once per program, not per call (a call timed
  alone would also pay the kernel's first touch of its fresh output pages). A part that carries
  feeds its outputs back as its next inputs (Adam updating its table in place); the others
  add a negligible multiple of the sum of their outputs to one element of every float input,
  which keeps every call live and stops XLA from hoisting work on an unchanging input (the
  similarity target's Gram product) out of the loop, at the price of one extra read of the
  outputs.
  """

  def perturb(leaf, total):
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return leaf
    return leaf.at[(0,) * leaf.ndim].add(1e-30 * total)

  def body(_, args):
    out = part.fn(*args)
    if part.carries:
      return out
    total = sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out))
    return jax.tree.map(lambda leaf: perturb(leaf, total), args)

  loop = jax.jit(lambda args: jax.lax.fori_loop(0, iterations, body, args))
  return median_seconds(loop, part.args, repeats=repeats) / iterations


def xla_cost(fn, *args) -> tuple[float, float]:
  """XLA's (FLOPs, bytes accessed) for one call of `fn` on `args`, compiled alone."""
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get("flops", math.nan)), float(cost.get("bytes accessed", math.nan))


def step_cost(recommender, exp, state) -> tuple[float, float]:
  """XLA's (FLOPs, bytes) for one stage-2 training step (an epoch is steps_per_epoch of these)."""
  rows = jnp.arange(recommender.batch_size)
  real = jnp.ones(recommender.batch_size, bool)
  return xla_cost(recommender.train_step, state, exp.train_data, rows, real, jax.random.key(0))


def timed_epochs(epoch_fn, state, data, *, epochs: int) -> tuple[object, list[float]]:
  """Runs `epochs` state-donating epochs (keys 2, 3, ...) and returns (state, their seconds).

  The caller has warmed up (compiled and run) `epoch_fn` once with key 1.
  """
  times = []
  for epoch in range(epochs):
    start = time.perf_counter()
    state, _ = jax.block_until_ready(epoch_fn(state, data, jax.random.key(epoch + 2)))
    times.append(time.perf_counter() - start)
  return state, times
