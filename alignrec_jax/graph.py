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

import dataclasses
import functools
import math

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


KNN_SEARCHES = ("exact", "ivf")


@dataclasses.dataclass(frozen=True)
class KnnSearch:
  """How the item kNN neighbours are found (`config.model.knn_search`, `knn_probes`).

  "exact": every item against every item in row blocks on the default JAX device (I^2 D work:
  2.6 s at Amazon Electronics' 63,001 items on an H100, 28 s on a 2-core CPU, and a hundred
  times that at ten times the items). "ivf": faiss's inverted-file index (`IndexIVFFlat`, inner
  product over the L2-normalised rows, 4 sqrt(I) lists trained by k-means, `probes` lists
  searched a query): approximate, for catalogues where the exact search is too slow;
  `benchmarks/bench_knn.py` measures its recall against the exact search. Needs faiss
  (`pip install -e '.[knn]'`).
  """

  method: str = "exact"
  probes: int = 32

  def __post_init__(self):
    if self.method not in KNN_SEARCHES:
      raise ValueError(f"knn search must be one of {KNN_SEARCHES}, got {self.method!r}")
    if self.probes < 1:
      raise ValueError(f"knn probes must be >= 1, got {self.probes}")


EXACT_SEARCH = KnnSearch()


def default_block_size(num_items: int, *, budget_bytes: int = 128 * 2**20) -> int:
  """Rows per similarity block so that one [block, num_items] float32 block fits the budget."""
  return int(np.clip(budget_bytes // (4 * max(num_items, 1)), 64, 1024))


def knn_graph(
  features: np.ndarray,
  *,
  k: int = 10,
  include_self: bool = True,
  block_size: int | None = None,
  search: KnnSearch = KnnSearch(),
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
    search: exact (the default) or approximate neighbours (`KnnSearch`).

  Returns:
    S as a GraphsTuple over the items: edge (j -> i) with weight S_ij for each of item i's k
    neighbours j, sorted by (i, j).
  """
  neighbours, values = knn_neighbours(
    features, k=k, include_self=include_self, block_size=block_size, search=search
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
  features: np.ndarray,
  *,
  k: int,
  include_self: bool = True,
  block_size: int | None = None,
  search: KnnSearch = KnnSearch(),
) -> tuple[np.ndarray, np.ndarray]:
  """Each item's top-k cosine neighbours: (ids [I, k] int32, cosines [I, k] float32).

  The item itself first when `include_self`, then by cosine, ties by lower item id; computed
  `block_size` rows at a time (see `knn_graph`). With `search.method == "ivf"` the neighbours
  after the item itself are faiss's approximate ones (their cosines exact).
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
  if search.method == "ivf":
    return _ivf_neighbours(normalized, k, include_self, search.probes, block_size)
  return _exact_neighbours(normalized, np.arange(num_items), k, include_self, block_size)


def exact_neighbours_of(
  features: np.ndarray, rows: np.ndarray, *, k: int, include_self: bool = True
) -> tuple[np.ndarray, np.ndarray]:
  """`knn_neighbours`' exact answer for the items `rows` alone (e.g. a sample, to measure an
  approximate search's recall without the whole exact graph)."""
  normalized = jnp.asarray(
    l2_normalize_rows(np.asarray(features, np.float32), norm_dtype=np.float32)
  )
  block_size = min(default_block_size(features.shape[0]), len(rows))
  return _exact_neighbours(normalized, np.asarray(rows), k, include_self, block_size)


def _exact_neighbours(
  normalized: jax.Array, rows: np.ndarray, k: int, include_self: bool, block_size: int
) -> tuple[np.ndarray, np.ndarray]:
  """`knn_neighbours` of the items `rows` (all of them, or the ones an approximate search
  could not fill), against every item."""
  num_rows = len(rows)
  values = np.empty((num_rows, k), np.float32)
  neighbours = np.empty((num_rows, k), np.int32)
  for start in range(0, num_rows, block_size):
    # The last block is padded to the full size so that _knn_block compiles once.
    block = rows[np.minimum(np.arange(start, start + block_size), num_rows - 1)]
    vals, idx = _knn_block(
      normalized[block], jnp.asarray(block, jnp.int32), normalized, k=k, include_self=include_self
    )
    stop = min(start + block_size, num_rows)
    values[start:stop] = np.asarray(vals)[: stop - start]
    neighbours[start:stop] = np.asarray(idx)[: stop - start]
  return neighbours, values


def _ivf_neighbours(
  normalized: jax.Array, k: int, include_self: bool, probes: int, block_size: int
) -> tuple[np.ndarray, np.ndarray]:
  """`knn_neighbours` by faiss's IVF index (see `KnnSearch`); rows it cannot fill with k
  neighbours (too few items in the lists it probed) are searched exactly."""
  try:
    import faiss  # noqa: PLC0415 (optional: only the approximate search needs it)
  except ImportError as e:
    raise ImportError(
      "the approximate kNN search (knn_search=ivf) needs faiss: pip install -e '.[knn]'"
    ) from e
  rows = np.asarray(normalized, np.float32)
  num_items, dim = rows.shape
  lists = max(1, min(int(4 * math.sqrt(num_items)), num_items // 39))  # faiss: >= 39 per list
  index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
  index.train(rows)
  index.add(rows)
  index.nprobe = min(probes, lists)
  sims, ids = index.search(rows, k + 1)
  own = ids == np.arange(num_items)[:, None]
  # The item itself, wherever the search put it, moves last (stable: the rest keep their order
  # by cosine) and is dropped; with include_self it then goes first with its own cosine.
  order = np.argsort(own, axis=1, kind="stable")
  ids, sims = np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)
  others = k - 1 if include_self else k
  ids, sims = ids[:, :others], sims[:, :others]
  if include_self:
    self_cosine = np.sum(rows * rows, axis=1, keepdims=True)  # 1, or 0 for a zero row
    ids = np.concatenate([np.arange(num_items)[:, None], ids], axis=1)
    sims = np.concatenate([self_cosine, sims], axis=1)
  unfilled = np.flatnonzero((ids < 0).any(axis=1))
  if len(unfilled):
    exact_ids, exact_sims = _exact_neighbours(normalized, unfilled, k, include_self, block_size)
    ids[unfilled], sims[unfilled] = exact_ids, exact_sims
  return ids.astype(np.int32), sims.astype(np.float32)


def mixed_knn_graph(
  modalities: list[np.ndarray],
  weights: list[float],
  *,
  k: int = 10,
  search: KnnSearch = KnnSearch(),
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
    search: exact (the default) or approximate neighbours (`KnnSearch`).
  """
  if len(modalities) != len(weights) or not modalities:
    raise ValueError(f"{len(modalities)} modalities but {len(weights)} weights")
  num_items = modalities[0].shape[0]
  entry = (k + 1e-7) ** -0.5 * (k + 1e-7) ** -0.5
  senders, receivers, values = [], [], []
  for features, weight in zip(modalities, weights, strict=True):
    neighbours, _ = knn_neighbours(features, k=k, include_self=True, search=search)
    senders.append(neighbours.ravel().astype(np.int64))
    receivers.append(np.repeat(np.arange(num_items, dtype=np.int64), k))
    values.append(np.full(num_items * k, weight * entry))
  senders, receivers, values = (np.concatenate(x) for x in (senders, receivers, values))
  # Sum the weights of (receiver, sender) pairs that several modalities keep.
  keys = receivers * num_items + senders
  unique, inverse = np.unique(keys, return_inverse=True)
  summed = np.bincount(inverse, weights=values, minlength=len(unique))
  return _graph(unique % num_items, unique // num_items, summed, num_nodes=num_items)
