"""Host-side graph construction, done once before training, in NumPy.

Two graphs feed AlignRec's stage 2:
  * the user-item bipartite graph A = [[0, R], [R^T, 0]] with symmetric normalisation
    A_hat = D^-1/2 A D^-1/2 (LightGCN's), as a `jraph.GraphsTuple` whose edges hold the weights;
  * the item-item kNN graph S over the item content features, built in row blocks so that no
    dense [num_items, num_items] matrix ever exists (FREEDOM's variant: `mixed_knn_graph`).
`user_rows` cuts R_hat, the item -> user edges, out of the first.

Both are `jraph.GraphsTuple`s whose `edges` hold the weights, sorted by receiver; they go to the
device as `propagation.SparseOperator`s, which derive whatever their kernel needs from them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from alignrec_jax.data.dataset import Interactions
from alignrec_jax.normalize import l2_normalize_rows


def _graph(
  senders: np.ndarray, receivers: np.ndarray, weights: np.ndarray, *, num_nodes: int
) -> jraph.GraphsTuple:
  """A single-graph GraphsTuple, edges sorted by (receiver, sender), `edges` the float32 weights.

  Sorted by receiver so that segment sums over receivers can say `indices_are_sorted=True`, and
  each receiver's edges are contiguous: the same arrays are the CSR rows of the csr kernel.
  """
  order = np.lexsort((senders, receivers))
  return jraph.GraphsTuple(
    nodes=None,
    edges=np.asarray(weights, np.float32)[order],
    senders=np.asarray(senders)[order].astype(np.int32),
    receivers=np.asarray(receivers)[order].astype(np.int32),
    n_node=np.array([num_nodes], np.int32),
    n_edge=np.array([len(order)], np.int32),
    globals=None,
  )


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
  return _graph(senders, receivers, weights, num_nodes=num_users + num_items)


def user_rows(graph: jraph.GraphsTuple, *, num_users: int) -> jraph.GraphsTuple:
  """R_hat, the item -> user edges of the user-item graph, with items renumbered from 0.

  A bipartite block rather than a graph of its own: its senders index the item table [0, I)
  and its receivers the user table [0, U), so that propagating item vectors [I, d] over it
  gives the users' aggregates [U, d] (AlignRec's M_u = R_hat M_i) without touching the item
  rows of A_hat.
  """
  into_users = np.asarray(graph.receivers) < num_users  # a prefix: edges are sorted by receiver
  return graph._replace(
    edges=np.asarray(graph.edges)[into_users],
    senders=np.asarray(graph.senders)[into_users] - np.int32(num_users),
    receivers=np.asarray(graph.receivers)[into_users],
    n_edge=np.array([int(into_users.sum())], np.int32),
  )


# ----------------------------------------------------------------------------- item kNN graph


@functools.partial(jax.jit, static_argnames=("k", "include_self"))
def _knn_block(
  block: jax.Array, row_ids: jax.Array, normalized: jax.Array, *, k: int, include_self: bool
) -> tuple[jax.Array, jax.Array]:
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


def knn_graph(
  features: np.ndarray, *, k: int = 10, include_self: bool = True, block_size: int | None = None
) -> jraph.GraphsTuple:
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
    S as a GraphsTuple over the items: edge (j -> i) with weight S_ij for each of item i's k
    neighbours j, sorted by (i, j).
  """
  neighbours, values = knn_neighbours(
    features, k=k, include_self=include_self, block_size=block_size
  )
  num_items = features.shape[0]
  inv_sqrt = _inverse_sqrt(values.sum(axis=1, dtype=np.float64))
  weights = inv_sqrt[:, None] * values * inv_sqrt[neighbours]
  rows = np.repeat(np.arange(num_items), k)
  return _graph(neighbours.ravel(), rows, weights.ravel(), num_nodes=num_items)


def block_diagonal(graphs: list[jraph.GraphsTuple]) -> jraph.GraphsTuple:
  """One graph holding `graphs` side by side: graph m's nodes become m * n + [0, n), for M
  graphs of n nodes each, so one propagation over [M n, d] rows runs all of them (MGCN's
  per-modality item graphs). Edges stay sorted by receiver."""
  num_nodes = {int(g.n_node.sum()) for g in graphs}
  if len(num_nodes) != 1:
    raise ValueError(f"block_diagonal needs graphs of one size, got {sorted(num_nodes)} nodes")
  (n,) = num_nodes
  return _graph(
    np.concatenate([g.senders + m * n for m, g in enumerate(graphs)]),
    np.concatenate([g.receivers + m * n for m, g in enumerate(graphs)]),
    np.concatenate([g.edges for g in graphs]),
    num_nodes=n * len(graphs),
  )


def knn_neighbours(
  features: np.ndarray, *, k: int, include_self: bool = True, block_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Each item's top-k cosine neighbours: (ids [I, k] int32, cosines [I, k] float32).

  The item itself first when `include_self`, then by cosine, ties by lower item id; computed
  `block_size` rows at a time (see `knn_graph`).
  """
  num_items = features.shape[0]
  if not 0 < k <= num_items - (0 if include_self else 1):
    raise ValueError(
      f"knn k={k} needs 1 <= k <= {num_items - (0 if include_self else 1)} "
      f"for {num_items} items (include_self={include_self})"
    )
  normalized = jnp.asarray(
    l2_normalize_rows(np.asarray(features, np.float32), norm_dtype=np.float32)
  )
  block_size = min(block_size or default_block_size(num_items), num_items)
  values = np.empty((num_items, k), np.float32)
  neighbours = np.empty((num_items, k), np.int32)
  for start in range(0, num_items, block_size):
    # The last block is padded to the full size so that _knn_block compiles once.
    rows = np.minimum(np.arange(start, start + block_size), num_items - 1)
    vals, idx = _knn_block(
      normalized[rows], jnp.asarray(rows, jnp.int32), normalized, k=k, include_self=include_self
    )
    stop = min(start + block_size, num_items)
    values[start:stop] = np.asarray(vals)[: stop - start]
    neighbours[start:stop] = np.asarray(idx)[: stop - start]
  return neighbours, values


def mixed_knn_graph(
  modalities: list[np.ndarray], weights: list[float], *, k: int = 10
) -> jraph.GraphsTuple:
  """FREEDOM's frozen item-item graph: per-modality binary kNN graphs, mixed by `weights`.

  For each modality, every item's top-k cosine neighbours (itself included, as MMRec's topk over
  the full similarity includes it) form a binary graph normalised as MMRec does, D^-1/2 A D^-1/2
  with D the row sums (k, plus MMRec's 1e-7), so every kept entry is 1 / (k + 1e-7); the graph is
  sum_m weights[m] * that, an entry kept by several modalities summing their weights. No dense
  I x I matrix (`knn_neighbours` works in row blocks).

  Args:
    modalities: [num_items, dim_m] feature arrays.
    weights: one mixing weight per modality (MMRec: image weight, 1 - image weight).
    k: neighbours per item.
  """
  if len(modalities) != len(weights) or not modalities:
    raise ValueError(f"{len(modalities)} modalities but {len(weights)} weights")
  num_items = modalities[0].shape[0]
  entry = (k + 1e-7) ** -0.5 * (k + 1e-7) ** -0.5
  senders, receivers, values = [], [], []
  for features, weight in zip(modalities, weights, strict=True):
    neighbours, _ = knn_neighbours(features, k=k, include_self=True)
    senders.append(neighbours.ravel().astype(np.int64))
    receivers.append(np.repeat(np.arange(num_items, dtype=np.int64), k))
    values.append(np.full(num_items * k, weight * entry))
  senders, receivers, values = (np.concatenate(x) for x in (senders, receivers, values))
  # Sum the weights of (receiver, sender) pairs that several modalities keep.
  keys = receivers * num_items + senders
  unique, inverse = np.unique(keys, return_inverse=True)
  summed = np.bincount(inverse, weights=values, minlength=len(unique))
  return _graph(unique % num_items, unique // num_items, summed, num_nodes=num_items)
