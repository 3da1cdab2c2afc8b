r"""Interleaved A/B of step variants that were tried and not adopted, to re-check on new hardware.

  python -m benchmarks.bench_rejected_variants [--rounds=3]

At Amazon-Baby scale (batch 2048, the real Baby graph), each variant against what the library
does, taking turns `rounds` times, each timing `iterations` calls inside one jitted loop
(`timing.in_loop_seconds`):

  info_nce   the two InfoNCE terms as the library computes them (B x B exponentials saved for
             the backward) against a blocked form that computes the gradient in the forward
             pass, `block` anchor rows at a time, so that no B x B matrix leaves the cache
             (the loss is a scalar, so the backward only scales the saved gradients)
  csr        one A_hat x X product (the user-item graph, 64-d) with the operator whole against
             the operator split into 2 or 4 row blocks of equal entries, which XLA could run
             concurrently

Results on the 2-core CPU are in benchmarks/README.md ("where the step's time goes").
"""

import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.experimental import sparse

from alignrec_jax.data import load_mmrec
from alignrec_jax.graph import user_item_graph
from alignrec_jax.normalize import l2_normalize
from alignrec_jax.objectives import losses
from alignrec_jax.propagation import SparseOperator
from benchmarks import machine
from benchmarks.timing import Part, in_loop_seconds
from configs import shared_dataset

_DATA = flags.DEFINE_string("data", shared_dataset("baby-graph"), "MMRec folder.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Turns each variant takes.")
_ITERATIONS = flags.DEFINE_integer("iterations", 10, "Calls inside one timed program.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed programs per turn (median).")
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")

_BATCH = 2048
_DIM = 64
_TEMPERATURE = 0.2


def _blocked_info_nce_and_grads(a, b, mask, inv_tau, block):
  """(loss, d loss / d a, d loss / d b) for normalised rows, `block` anchors at a time."""
  count = jnp.maximum(jnp.sum(mask), 1.0)
  weight = mask / count
  positive = jnp.sum(a * b, axis=-1) * inv_tau
  total = jnp.zeros(())
  grad_a_blocks = []
  grad_b = jnp.zeros_like(b)
  for start in range(0, a.shape[0], block):
    rows = slice(start, start + block)
    exps = jnp.exp((a[rows] * inv_tau) @ b.T - inv_tau) * mask[None, :]
    row_sums = jnp.sum(exps, axis=1)
    per_row = jnp.log(row_sums) + inv_tau - positive[rows]
    total += jnp.sum(jnp.where(mask[rows] > 0, per_row, 0.0))
    scale = (weight[rows] / row_sums)[:, None]
    grad_a_blocks.append(inv_tau * (scale * (exps @ b) - weight[rows, None] * b[rows]))
    grad_b += exps.T @ (scale * a[rows])
  return (total / count, jnp.concatenate(grad_a_blocks), inv_tau * (grad_b - weight[:, None] * a))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _blocked_info_nce(a, b, mask, inv_tau, block):
  return _blocked_info_nce_and_grads(a, b, mask, inv_tau, block)[0]


def _blocked_fwd(a, b, mask, inv_tau, block):
  loss, grad_a, grad_b = _blocked_info_nce_and_grads(a, b, mask, inv_tau, block)
  return loss, (grad_a, grad_b, mask)


def _blocked_bwd(inv_tau, block, residuals, g):
  del inv_tau, block
  grad_a, grad_b, mask = residuals
  return g * grad_a, g * grad_b, jnp.zeros_like(mask)


_blocked_info_nce.defvjp(_blocked_fwd, _blocked_bwd)


def info_nce_variants() -> tuple[dict[str, Part], str]:
  """({name: Part} of the two InfoNCE terms, forward and backward, max gradient difference).

  The difference is the largest of any variant's gradients from the library's, as text.
  """

  def library(a, b, c, d, mask):
    return losses.info_nce(
      anchors=a, positives=b, temperature=_TEMPERATURE, mask=mask
    ) + losses.info_nce(anchors=c, positives=d, temperature=_TEMPERATURE, mask=mask)

  def blocked(block):
    def pair(a, b, c, d, mask):
      norm = l2_normalize
      return _blocked_info_nce(norm(a), norm(b), mask, 1 / _TEMPERATURE, block) + _blocked_info_nce(
        norm(c), norm(d), mask, 1 / _TEMPERATURE, block
      )

    return pair

  keys = jax.random.split(jax.random.key(0), 4)
  args = (
    *(jax.random.normal(k, (_BATCH, _DIM)) for k in keys),
    jnp.ones(_BATCH).at[-100:].set(0.0),
  )  # a padded last batch
  fns = {"library": library, **{f"blocked_{n}": blocked(n) for n in (256, 512, 1024)}}
  parts = {name: Part(jax.value_and_grad(fn, (0, 1, 2, 3)), args) for name, fn in fns.items()}
  reference = jax.jit(parts["library"].fn)(*args)[1]
  worst = max(
    float(jnp.max(jnp.abs(x - y)))
    for part in parts.values()
    for x, y in zip(jax.jit(part.fn)(*args)[1], reference, strict=True)
  )
  return parts, f"{worst:.1e}"


def csr_variants(data_dir: str) -> dict[str, Part]:
  """{name: Part} of one A_hat x X product with the operator whole or in row blocks."""
  dataset = load_mmrec(data_dir)
  op = SparseOperator.from_graph(
    user_item_graph(dataset.train, num_users=dataset.num_users, num_items=dataset.num_items),
    kernel="csr",
  )
  indptr, indices, values = (
    np.asarray(a) for a in (op.csr.indptr, op.graph.senders, op.graph.edges)
  )
  num_rows, nnz = op.shape[0], len(values)
  x = jax.random.normal(jax.random.key(1), (num_rows, _DIM)) * 0.1

  def row_blocks(count):
    cuts = [0, *(int(np.searchsorted(indptr, nnz * j // count)) for j in range(1, count)), num_rows]
    return [
      (
        jnp.asarray(values[indptr[lo] : indptr[hi]]),
        jnp.asarray(indices[indptr[lo] : indptr[hi]]),
        jnp.asarray(indptr[lo : hi + 1] - indptr[lo]),
        (hi - lo, op.shape[1]),
      )
      for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
    ]

  def product(blocks):
    shapes = [shape for *_, shape in blocks]

    def fn(x, arrays):
      return jnp.concatenate(
        [sparse.BCSR(arr, shape=shape) @ x for arr, shape in zip(arrays, shapes, strict=True)]
      )

    return Part(fn, (x, [tuple(block[:3]) for block in blocks]))

  return {f"{n}_blocks": product(row_blocks(n)) for n in (1, 2, 4)}


def main(argv):
  del argv
  result = machine.describe()
  nce_parts, result["info_nce_max_grad_difference"] = info_nce_variants()
  for group, parts in (("info_nce", nce_parts), ("csr", csr_variants(_DATA.value))):
    times = {name: [] for name in parts}
    for _ in range(_ROUNDS.value):
      for name, part in parts.items():
        times[name].append(
          1e3 * in_loop_seconds(part, iterations=_ITERATIONS.value, repeats=_REPEATS.value)
        )
    result[group] = {
      name: {"ms_median": statistics.median(t), "ms_all": t} for name, t in times.items()
    }
  machine.report(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
