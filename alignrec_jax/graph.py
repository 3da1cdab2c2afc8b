"""Host-side graph construction, done once before training, in NumPy.

Two graphs feed AlignRec's stage 2:
  * the user-item bipartite graph A = [[0, R], [R^T, 0]] with symmetric normalisation
    A_hat = D^-1/2 A D^-1/2 (LightGCN's), as a `jraph.GraphsTuple` whose edges hold the weights;
  * the item-item kNN graph S over the item content features, built in row blocks so that no
    dense [num_items, num_items] matrix ever exists.

Both end up as CSR matrices (`Csr`) for the propagation kernels; `Csr.transpose()` gives the
matrix the backward pass multiplies by.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from alignrec_jax.data.dataset import Interactions


@dataclasses.dataclass(frozen=True)
class Csr:
  """A float32 CSR matrix on the host: row r holds indices[indptr[r]:indptr[r+1]]."""

  indptr: np.ndarray  # [num_rows + 1] int32
  indices: np.ndarray  # [nnz] int32, column ids, ascending within a row
  data: np.ndarray  # [nnz] float32
  shape: tuple[int, int]

  @property
  def nnz(self) -> int:
    return int(self.indices.shape[0])

  def row_ids(self) -> np.ndarray:
    """[nnz] int32 row id of every stored entry."""
    return np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))

  def transpose(self) -> Csr:
    return csr_from_coo(self.indices, self.row_ids(), self.data, (self.shape[1], self.shape[0]))

  def todense(self) -> np.ndarray:
    """Dense copy, for tests on tiny graphs only."""
    out = np.zeros(self.shape, np.float32)
    np.add.at(out, (self.row_ids(), self.indices), self.data)
    return out


def csr_from_coo(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                 shape: tuple[int, int]) -> Csr:
  """CSR from coordinate lists, entries sorted by (row, column). Duplicates are kept as is."""
  rows = np.asarray(rows, np.int64)
  cols = np.asarray(cols, np.int64)
  order = np.lexsort((cols, rows))
  counts = np.bincount(rows, minlength=shape[0])
  indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
  return Csr(indptr=indptr, indices=cols[order].astype(np.int32),
             data=np.asarray(vals, np.float32)[order], shape=(int(shape[0]), int(shape[1])))


def _inverse_sqrt(values: np.ndarray) -> np.ndarray:
  """values^-1/2 with 0 where values <= 0 (LightGCN's rule for zero-degree nodes; no NaN)."""
  out = np.zeros(values.shape, np.float64)
  positive = values > 0
  out[positive] = values[positive] ** -0.5
  return out


# ----------------------------------------------------------------------------- user-item graph


def user_item_graph(train: Interactions, *, num_users: int, num_items: int) -> jraph.GraphsTuple:
  """The normalised bipartite graph of the training interactions as a jraph.GraphsTuple.

  Nodes are users [0, num_users) then items [num_users, num_users + num_items). Every
  interaction gives two directed edges (user -> item and item -> user); `edges` holds the
  weight 1 / sqrt(deg(sender) deg(receiver)) of A_hat = D^-1/2 A D^-1/2, and edges are sorted by
  receiver so that `segment_sum(..., indices_are_sorted=True)` applies. No self-loops.

  Args:
    train: the training interactions (no duplicate pairs; the loader guarantees it).
    num_users: number of users U.
    num_items: number of items I.

  Returns:
    A single-graph GraphsTuple with `nodes=None`, `edges` [2 n_train] float32 weights.
  """
  users = train.users.astype(np.int64)
  items = train.items.astype(np.int64) + num_users
  degree = np.bincount(np.concatenate([users, items]), minlength=num_users + num_items)
  inv_sqrt = _inverse_sqrt(degree.astype(np.float64))
  senders = np.concatenate([users, items])
  receivers = np.concatenate([items, users])
  weights = inv_sqrt[senders] * inv_sqrt[receivers]
  order = np.lexsort((senders, receivers))
  num_nodes = num_users + num_items
  return jraph.GraphsTuple(
      nodes=None,
      edges=weights[order].astype(np.float32),
      senders=senders[order].astype(np.int32),
      receivers=receivers[order].astype(np.int32),
      n_node=np.array([num_nodes], np.int32),
      n_edge=np.array([senders.shape[0]], np.int32),
      globals=None,
  )


def graph_to_csr(graph: jraph.GraphsTuple) -> Csr:
  """A_hat as CSR with rows = receivers: (A_hat x)[r] = sum over edges into r of w * x[sender]."""
  num_nodes = int(np.sum(graph.n_node))
  return csr_from_coo(graph.receivers, graph.senders, graph.edges, (num_nodes, num_nodes))


def user_item_block(adjacency: Csr, *, num_users: int) -> Csr:
  """R_hat, the [num_users, num_items] user rows of A_hat, with item columns renumbered from 0."""
  end = adjacency.indptr[num_users]
  return Csr(indptr=adjacency.indptr[: num_users + 1].copy(),
             indices=adjacency.indices[:end] - num_users,
             data=adjacency.data[:end].copy(),
             shape=(num_users, adjacency.shape[1] - num_users))


# ----------------------------------------------------------------------------- item kNN graph


@functools.partial(jax.jit, static_argnames=("k", "include_self"))
def _knn_block(block: jax.Array, row_ids: jax.Array, normalized: jax.Array, *, k: int,
               include_self: bool) -> tuple[jax.Array, jax.Array]:
  """Top-k cosine neighbours of one block of rows; ties broken by lower item id."""
  sims = block @ normalized.T  # [block, num_items]
  own = jnp.arange(normalized.shape[0])[None, :] == row_ids[:, None]
  # Self goes first when included (duplicate rows also have cosine 1: self must win the tie);
  # when excluded it can never be chosen. lax.top_k ranks equal values by lower index.
  ranked = jnp.where(own, jnp.inf if include_self else -jnp.inf, sims)
  _, idx = jax.lax.top_k(ranked, k)
  return jnp.take_along_axis(sims, idx, axis=1), idx


def default_block_size(num_items: int, *, budget_bytes: int = 128 * 2**20) -> int:
  """Rows per similarity block so that one [block, num_items] float32 block fits the budget."""
  return int(np.clip(budget_bytes // (4 * max(num_items, 1)), 64, 1024))


def knn_graph(features: np.ndarray, *, k: int = 10, include_self: bool = True,
              block_size: int | None = None) -> Csr:
  """The normalised item-item kNN graph S of AlignRec's content branch, without any I x I matrix.

  Cosine similarity between rows of `features`; each row keeps its top k (the item itself first
  when `include_self`, then by similarity, ties by lower item id) with the cosine as the edge
  weight; then S_ij = deg_i^-1/2 s_ij deg_j^-1/2 with deg = row sums of the kept weights (not
  symmetrised; a row whose kept weights sum to <= 0 gets 0, so there is no NaN). Zero feature
  rows have cosine 0 with everything.

  Memory is O(num_items k + block_size num_items): similarities are computed `block_size` rows
  at a time on the default JAX device (by default as many rows as fit in 128 MB).

  Args:
    features: [num_items, dim] item features.
    k: neighbours per item (self included when `include_self`).
    include_self: keep the item as its own first neighbour (the reference's behaviour).
    block_size: rows per similarity block (None: `default_block_size`).

  Returns:
    S as a [num_items, num_items] Csr with k entries per row.
  """
  num_items = features.shape[0]
  if not 0 < k <= num_items - (0 if include_self else 1):
    raise ValueError(f"knn k={k} needs 1 <= k <= {num_items - (0 if include_self else 1)} "
                     f"for {num_items} items (include_self={include_self})")
  feats = np.asarray(features, np.float32)
  norms = np.linalg.norm(feats, axis=1, keepdims=True)
  normalized = jnp.asarray(feats / np.maximum(norms, 1e-12))
  block_size = min(block_size or default_block_size(num_items), num_items)
  values = np.empty((num_items, k), np.float32)
  neighbours = np.empty((num_items, k), np.int32)
  for start in range(0, num_items, block_size):
    # The last block is padded to the full size so that _knn_block compiles once.
    rows = np.minimum(np.arange(start, start + block_size), num_items - 1)
    vals, idx = _knn_block(normalized[rows], jnp.asarray(rows, jnp.int32), normalized, k=k,
                           include_self=include_self)
    stop = min(start + block_size, num_items)
    values[start:stop] = np.asarray(vals)[: stop - start]
    neighbours[start:stop] = np.asarray(idx)[: stop - start]
  inv_sqrt = _inverse_sqrt(values.sum(axis=1, dtype=np.float64))
  weights = inv_sqrt[:, None] * values * inv_sqrt[neighbours]
  rows = np.repeat(np.arange(num_items), k)
  return csr_from_coo(rows, neighbours.ravel(), weights.ravel(), (num_items, num_items))
