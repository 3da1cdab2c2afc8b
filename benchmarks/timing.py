"""Timing helpers shared by the benchmarks: medians after a warm-up, parts timed in a loop."""

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
