"""Reference forms of the spec's formulas, shared by the known-answer tests.

Plain NumPy, plus two JAX references of losses whose fast library forms are checked against them
(value and gradient), and a dense view of the library's graphs.
"""

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from alignrec_jax.normalize import l2_normalize


def normalize(x):
  """Rows divided by max(norm, 1e-12), as torch.nn.functional.normalize."""
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def info_nce(a, b, tau):
  """mean_k -log(exp(a_k.b_k / t) / sum_j exp(a_k.b_j / t)) over L2-normalised rows."""
  a, b = normalize(a), normalize(b)
  logits = a @ b.T / tau
  return np.mean(-np.log(np.exp(np.diag(logits)) / np.exp(logits).sum(1)))


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def dense(graph: jraph.GraphsTuple, shape: tuple[int, int] | None = None) -> np.ndarray:
  """The matrix a weighted graph stands for: entry (receiver, sender) sums the edges' weights.

  Args:
    graph: a GraphsTuple whose `edges` are [nnz] weights (graph.py's graphs).
    shape: (rows, cols); default square over the graph's nodes.

  Returns:
    float64 [rows, cols], so that (dense @ x)[r] = sum over edges into r of w * x[sender].
  """
  if shape is None:
    num_nodes = int(np.sum(graph.n_node))
    shape = (num_nodes, num_nodes)
  out = np.zeros(shape, np.float64)
  np.add.at(
    out,
    (np.asarray(graph.receivers), np.asarray(graph.senders)),
    np.asarray(graph.edges, np.float64),
  )
  return out


# ----------------------------------------------------------------------------- JAX references


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def info_nce_reference(
  *, anchors: jax.Array, positives: jax.Array, temperature: float, mask: jax.Array
) -> jax.Array:
  """losses.info_nce by automatic differentiation of a logsumexp, for tests of the fast one."""
  a = l2_normalize(anchors)
  b = l2_normalize(positives)
  logits = (a @ b.T) / temperature
  logits = jnp.where(mask[None, :] > 0, logits, -jnp.inf)
  per_row = jax.nn.logsumexp(logits, axis=-1) - jnp.sum(a * b, axis=-1) / temperature
  return _masked_mean(jnp.where(mask > 0, per_row, 0.0), mask)


def similarity_preservation_dense(
  *, embeddings: jax.Array, features: jax.Array, mask: jax.Array
) -> jax.Array:
  """losses.similarity_preservation with the two B x B matrices (the reference's way)."""
  y = jax.lax.stop_gradient(l2_normalize(features))
  pair_mask = mask[:, None] * mask[None, :]
  diff = (embeddings @ embeddings.T - y @ y.T) * pair_mask
  return jnp.sqrt(jnp.sum(diff * diff)) / jnp.maximum(jnp.sum(mask), 1.0)
