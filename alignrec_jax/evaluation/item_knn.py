"""Content-only recommendation, no ID training: item-kNN over the item features.

One of the paper's "intermediate" evaluations of feature quality (ALIGNREC.md):
score(u, j) = sum over the user's distinct training items i of S(i, j), where S keeps for each
item i its k most cosine-similar OTHER items, weighted by the raw cosine. Ranked and scored with
the project's full-ranking protocol (`ranking.evaluate_scores`: training items masked, valid and
test from one pass, ties to the lower item id):

  features, _ = combine_features(dataset.features)
  content_only = evaluate_item_knn(dataset, features, k=10)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignrec_jax.data.dataset import Dataset
from alignrec_jax.evaluation.index import DEFAULT_CHUNK_SIZE, make_eval_data
from alignrec_jax.evaluation.ranking import DEFAULT_KS, ScoreChunk, evaluate_scores
from alignrec_jax.graph import knn_graph
from alignrec_jax.normalize import l2_normalize_rows

# Feature entries multiplied per block when recomputing the kept cosines (64 MB of float32).
_COSINE_BLOCK_ELEMENTS = 2**24

# ----------------------------------------------------------------------------- item-kNN


def _check_features(features: np.ndarray, num_items: int | None = None) -> np.ndarray:
  """features as float32 [num_items, dim], or a ValueError saying what is wrong."""
  feats = np.asarray(features, np.float32)
  if feats.ndim != 2:
    raise ValueError(f"features must be a 2-D [num_items, dim] array, got shape {feats.shape}")
  if num_items is not None and feats.shape[0] != num_items:
    raise ValueError(f"features have {feats.shape[0]} rows but the dataset has {num_items} items")
  if not np.all(np.isfinite(feats)):
    raise ValueError("features contain NaN or infinite values")
  return feats


def item_knn(
  features: np.ndarray, *, k: int = 10, block_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Each item's k most cosine-similar other items, with the raw cosines as weights.

  The neighbour sets come from `graph.knn_graph(features, k=k, include_self=False)`: cosine of
  the rows (a zero row has cosine 0 with everything), the item itself excluded, ties broken by
  lower item id, no I x I matrix. Its edge weights are not usable here: they are
  deg_i^-1/2 s_ij deg_j^-1/2 (normalised by the rows' kept-weight sums, for AlignRec's content
  branch), whereas item-kNN scores with the raw cosine s_ij. So only the neighbour sets are kept
  and the k cosines of each row are recomputed from the L2-normalised features (rows divided by
  norms taken in float32, as `knn_graph` does); negative cosines stay negative.

  Args:
    features: [num_items, dim] item features.
    k: neighbours per item, 1 <= k <= num_items - 1.
    block_size: rows per similarity block of `knn_graph` (None: its default).

  Returns:
    neighbours: [num_items, k] int32 neighbour ids, ascending within a row.
    weights: [num_items, k] float32 cosine(item, neighbour).
  """
  feats = _check_features(features)
  num_items, dim = feats.shape
  graph = knn_graph(feats, k=k, include_self=False, block_size=block_size)
  neighbours = graph.senders.reshape(num_items, k)  # exactly k edges into every item
  normalized = l2_normalize_rows(feats, norm_dtype=np.float32)
  weights = np.empty((num_items, k), np.float32)
  # Gathering the neighbours' rows costs rows * k * dim floats: bounded per block.
  rows = max(1, _COSINE_BLOCK_ELEMENTS // max(k * dim, 1))
  for start in range(0, num_items, rows):
    stop = min(start + rows, num_items)
    weights[start:stop] = np.einsum(
      "rd,rkd->rk", normalized[start:stop], normalized[neighbours[start:stop]]
    )
  return neighbours, weights


def item_knn_scores(similarity: tuple[jax.Array, jax.Array], chunk: ScoreChunk) -> jax.Array:
  """Item-kNN scores of one chunk of users: a score function for `evaluate_scores`.

  scores[r, j] = sum over the row's training pairs (r, i) of S(i, j), i.e. the chunk's
  [chunk_size, num_items] 0/1 history rows times the sparse S, computed as a scatter-add of the
  k weighted neighbours of every training pair: O(pairs * k) work, no dense history or S.
  The training pairs of `ScoreChunk` are distinct, so a repeated interaction counts once.

  The additions run in pair order on CPU (deterministic); GPU scatter-adds may add in any order,
  so equal sums of different terms can differ in the last bit there, changing which of two
  near-tied items ranks first.

  Args:
    similarity: (neighbours [num_items, k] int32, weights [num_items, k] float32), from
      `item_knn`.
    chunk: the chunk's users and training pairs.

  Returns:
    [chunk_size, num_items] float32 scores.
  """
  neighbours, weights = similarity
  size, num_items = chunk.users.shape[0], neighbours.shape[0]
  cols = neighbours[chunk.train_items]  # [pairs, k]
  rows = jnp.broadcast_to(chunk.train_rows[:, None], cols.shape)
  # Entries past the chunk's pairs have row chunk_size: dropped.
  return (
    jnp.zeros((size, num_items), jnp.float32)
    .at[rows, cols]
    .add(weights[chunk.train_items].astype(jnp.float32), mode="drop")
  )


def evaluate_item_knn(
  dataset: Dataset,
  features: np.ndarray,
  *,
  k: int = 10,
  ks: Sequence[int] = DEFAULT_KS,
  chunk_size: int = DEFAULT_CHUNK_SIZE,
  head_fraction: float = 0.2,
  method: str | None = None,
  block_size: int | None = None,
) -> dict[str, dict[str, float]]:
  """Content-only recommendation (no ID training): item-kNN over the features, full ranking.

  score(u, j) = sum over u's distinct training items i of S(i, j), S from `item_knn` (top-k other
  items by cosine, raw cosine weights). Evaluated exactly as `evaluate` evaluates embeddings:
  every user with a training interaction, training items masked, ties to the lower item id,
  MMRec metrics and their long-tail variants on valid and test from one pass. Scores are computed
  on device, `chunk_size` users at a time; nothing is [num_users, num_items] or I x I.

  Args:
    dataset: the dataset (its splits and sizes; `features` is passed separately).
    features: [num_items, dim] item features (e.g. `combine_features(dataset.features)[0]`).
    k: neighbours per item in S.
    ks: metric cutoffs, each in 1..num_items.
    chunk_size: users scored per device step.
    head_fraction: fraction of items, by training popularity, that are head items.
    method: ranking method of `evaluate` ("count" or "top_k"; None: its default).
    block_size: rows per similarity block when building S (None: `knn_graph`'s default).

  Returns:
    {"valid": {...}, "test": {...}} with the keys of `evaluate`.
  """
  feats = _check_features(features, int(dataset.num_items))
  data = make_eval_data(dataset, chunk_size=chunk_size, head_fraction=head_fraction)
  neighbours, weights = item_knn(feats, k=k, block_size=block_size)
  similarity = (jnp.asarray(neighbours), jnp.asarray(weights))
  return evaluate_scores(item_knn_scores, similarity, data, ks=ks, method=method)
