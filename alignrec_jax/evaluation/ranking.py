"""Full-ranking top-K evaluation (MMRec protocol), run on device in one jitted pass.

Every user with at least one training interaction is ranked against all items; the user's training
items are masked out (score -inf), and one scoring pass serves both the validation and the test
split (validation items are not masked at test time, nor test items at validation time). Metrics
follow MMRec (`utils/metrics.py`): per user with n >= 1 held-out items in the split and hits over
the top-K positions p = 1..K,

  Recall@K    = hits / n                                     (not capped at K)
  NDCG@K      = sum_{hit p} 1 / log2(p + 1)  /  sum_{p=1..min(n, K)} 1 / log2(p + 1)
  Precision@K = hits / K
  MAP@K       = sum_{hit p} (hits within top p) / p  /  min(n, K)

averaged over the users with n >= 1 in that split. Long-tail ("tail_") variants rank over all items
as usual but count only hits on tail items and use n_tail, the user's number of held-out tail
items, in place of n (precision still divides by K); users with n_tail = 0 are not averaged.

Ties: items with equal scores rank the lower item id first; -0.0, +0.0 and subnormal scores all
count as 0.0 (XLA flushes subnormals in comparisons). Scores must not be NaN (NaN embeddings give
unspecified rankings).

Two ways to find the hits, equal to the last bit (tested):
  "top_k": `jax.lax.top_k(scores, max(ks))` per chunk, then look the top items up in a
    [chunk_size, num_items] label array. On CPU, XLA's TopK is a comparison heap on one thread
    and dominates the evaluation.
  "count": the rank of each held-out item is the number of items ranked above it,
    sum_i [s_i > s_j or (s_i == s_j and i < j)], one vectorized pass over the chunk's scores per
    held-out slot (pass m handles the m-th held-out item of every user in the chunk); the item is a
    hit at position rank + 1 if rank < max(ks). Only held-out items need ranks, and most users
    have 2 (one valid, one test), so this is a few cheap passes instead of a sort; users are laid
    out by decreasing held-out count so that each chunk needs as many passes as its first user.
    The default on CPU. Its cost grows with the largest held-out count per chunk: a user with
    thousands of held-out items would make its chunk slow.
The default on GPU/TPU is "top_k" (both are exact; pick with `method=`). benchmarks/README.md
times both on each machine ("Evaluation methods").

Layout: users are processed in fixed chunks of `chunk_size` rows (the last one padded; padded rows
have no held-out items and so drop out of every average). No [num_users, num_items] array is ever
built on the host: the (user, item) pairs are kept sorted by user as flat arrays with per-chunk
offsets, and each chunk's pairs are scattered into its [chunk_size, ...] arrays inside the jitted
per-chunk function. The loop over chunks is a `lax.map` inside one jit that returns per-chunk
metric sums; the host adds them up in float64 and divides (big_vision evaluator style).

The index of held-out and training pairs is built once on the host (`index.py`,
`make_eval_data`). Typical use:

  eval_data = make_eval_data(dataset)          # once, host side
  eval_data = jax.device_put(eval_data)        # optional: keeps the index arrays on device
  results = evaluate(user_emb, item_emb, eval_data)
  results["valid"]["recall@20"], results["test"]["tail_ndcg@10"]

Scorers that are not a dot product of embedding tables go through `evaluate_scores(score_fn,
params, eval_data)`, the same pass with the per-chunk scores from `score_fn` (see `ScoreChunk`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from alignrec_jax.evaluation.index import HELDOUT_SPLITS, SPLIT_FLAGS, TAIL_FLAG, EvalData

DEFAULT_KS = (5, 10, 20, 50)
METRICS = ("recall", "ndcg", "precision", "map")
METHODS = ("count", "top_k")


def _window(values: jax.Array, offsets: jax.Array, chunk: jax.Array, length: int) -> jax.Array:
  """values[offsets[chunk]:][:length]: a static-length window at the chunk's first pair."""
  return jax.lax.dynamic_slice_in_dim(values, offsets[chunk], length)


def _chunk_rows(
  rows: jax.Array, offsets: jax.Array, chunk: jax.Array, length: int, size: int
) -> jax.Array:
  """The rows of the chunk's pairs, [length]; entries past the chunk's end get row `size`.

  Those entries belong to the next chunk (or are padding): an out-of-range row makes a scatter
  with mode='drop' ignore them.
  """
  start, end = offsets[chunk], offsets[chunk + 1]
  inside = start + jnp.arange(length, dtype=start.dtype) < end
  return jnp.where(inside, _window(rows, offsets, chunk, length), size)


def _sortable_keys(scores: jax.Array) -> jax.Array:
  """int32 keys with the order of the float32 scores; -0.0 and +0.0 (and flushed subnormals) tie.

  Non-negative floats keep their bits; negative ones get their magnitude bits flipped, so that
  more negative means a smaller key.
  """
  bits = jax.lax.bitcast_convert_type(scores, jnp.int32)
  return jnp.where(scores == 0, 0, bits ^ ((bits >> 31) & 0x7FFFFFFF))


# Key of a masked (training) item: that of -inf, below every other score.
_MASKED_KEY = -(2**31) + 0x7FFFFF


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _ChunkPairs:
  """One chunk's pairs, [T] training (masked out of the ranking) and [L] held out.

  Rows are out of range for entries that are not the chunk's pairs (a scatter with mode="drop"
  skips them); `slots` is each held-out pair's index among its row's held-out pairs.
  """

  train_rows: jax.Array
  train_items: jax.Array
  rows: jax.Array
  items: jax.Array
  flags: jax.Array
  slots: jax.Array


def _labels_top_k(scores: jax.Array, pairs: _ChunkPairs, k_max: int) -> jax.Array:
  """Labels of the top k_max items of each row via `lax.top_k`.

  Args:
    scores: [chunk_size, num_items] float32 scores.
    pairs: the chunk's training and held-out pairs.
    k_max: positions to return.

  Returns:
    [chunk_size, k_max] int8 flags of the item at each position (0: not held out).
  """
  # top_k orders -0.0 below +0.0 (and, on CPU, keeps apart the subnormals that XLA's comparisons
  # flush to zero): make every score equal to 0 exactly +0.0 so that all of them tie.
  scores = jnp.where(scores == 0, 0.0, scores)
  scores = scores.at[pairs.train_rows, pairs.train_items].set(-jnp.inf, mode="drop")
  labels = (
    jnp.zeros(scores.shape, jnp.int8).at[pairs.rows, pairs.items].set(pairs.flags, mode="drop")
  )
  top_scores, top_items = jax.lax.top_k(scores, k_max)  # ties: lower index first
  top_labels = jnp.take_along_axis(labels, top_items, axis=1)
  # With fewer than k_max unmasked items, top_k returns masked (training) items: never hits.
  return jnp.where(top_scores > -jnp.inf, top_labels, 0)


def _labels_count(
  scores: jax.Array,
  pairs: _ChunkPairs,
  pass_items: jax.Array,
  first_pass: jax.Array,
  num_passes: jax.Array,
  max_passes: int,
  k_max: int,
) -> jax.Array:
  """Same result as `_labels_top_k`, from the rank of each held-out item.

  Args:
    scores: [chunk_size, num_items] float32 scores.
    pairs: the chunk's training and held-out pairs.
    pass_items: [Q + 1, chunk_size] int32 all chunks' per-pass items (EvalData.pass_items).
    first_pass: [] int32 this chunk's first row of pass_items.
    num_passes: [] int32 this chunk's passes, at most max_passes.
    max_passes: static bound on num_passes.
    k_max: positions to return.

  Returns:
    [chunk_size, k_max] int8 flags of the item at each position (0: not held out).
  """
  size, num_items = scores.shape
  item_ids = jnp.arange(num_items, dtype=jnp.int32)
  # Integer keys: for a lower id, "score >= value" becomes "key > key(value) - 1", so both cases
  # are one comparison with no select (cheaper on XLA CPU than selecting between two float
  # comparisons; a float nextafter would need subnormals, which XLA flushes to zero).
  keys = (
    _sortable_keys(scores).at[pairs.train_rows, pairs.train_items].set(_MASKED_KEY, mode="drop")
  )

  def one_pass(m: jax.Array, ranks: jax.Array) -> jax.Array:
    item = jax.lax.dynamic_index_in_dim(pass_items, first_pass + m, keepdims=False)  # [size]
    value = jnp.take_along_axis(keys, item[:, None], axis=1)  # [size, 1]
    # Items ranked above `item`: higher score, or equal score and lower id.
    above = keys > value - (item_ids < item[:, None])
    # A float32 sum vectorizes better than an int32 one on XLA CPU; exact below 2**24 items.
    count = jnp.sum(jnp.where(above, 1.0, 0.0), axis=1).astype(jnp.int32)
    return jax.lax.dynamic_update_index_in_dim(ranks, count, m, axis=0)

  ranks = jax.lax.fori_loop(0, num_passes, one_pass, jnp.full((max_passes, size), k_max, jnp.int32))
  safe_rows = jnp.minimum(pairs.rows, size - 1)
  rank = ranks[pairs.slots, safe_rows]  # [L]
  # A masked (training) held-out item is never a hit, whatever its rank among the -inf scores.
  hit = (rank < k_max) & (keys[safe_rows, pairs.items] > _MASKED_KEY)
  # Distinct items of one row have distinct ranks, so the scatter has no collisions.
  return (
    jnp.zeros((size, k_max), jnp.int8)
    .at[jnp.where(hit, pairs.rows, size), rank]
    .set(pairs.flags, mode="drop")
  )


def _metric_sums(
  hit: jax.Array, num_relevant: jax.Array, ks: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
  """Sums over the users of one chunk of the four metrics at each K.

  Args:
    hit: [chunk_size, max(ks)] bool, whether the item at each position is relevant.
    num_relevant: [chunk_size] int32 relevant items per user; users with 0 are not counted.
    ks: the cutoffs, ascending.

  Returns:
    sums: [4, len(ks)] float32 sums of (recall, ndcg, precision, map) over counted users.
    count: [] int32 counted users.
  """
  h = hit.astype(jnp.float32)
  positions = jnp.arange(1, h.shape[1] + 1, dtype=jnp.float32)
  discount = 1.0 / jnp.log2(positions + 1.0)
  num_hits = jnp.cumsum(h, axis=1)
  dcg = jnp.cumsum(h * discount, axis=1)
  # Precision at each hit position, accumulated: the numerator of average precision.
  ap = jnp.cumsum(h * num_hits / positions, axis=1)
  # idcg[m] = sum of the first m discounts; idcg[0] is never used (such users are not counted).
  idcg = jnp.concatenate([jnp.ones(1, jnp.float32), jnp.cumsum(discount)])

  cols = np.asarray(ks) - 1
  k = jnp.asarray(ks, jnp.int32)
  counted = num_relevant > 0
  n = jnp.maximum(num_relevant, 1)[:, None]
  ideal = jnp.minimum(n, k)  # [chunk_size, len(ks)], >= 1
  hits_k = num_hits[:, cols]
  per_user = jnp.stack(
    [hits_k / n, dcg[:, cols] / idcg[ideal], hits_k / k, ap[:, cols] / ideal], axis=1
  )  # [chunk_size, 4, len(ks)]
  sums = jnp.sum(jnp.where(counted[:, None, None], per_user, 0.0), axis=0)
  return sums, jnp.sum(counted, dtype=jnp.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ScoreChunk:
  """What a score function sees of one chunk of evaluation rows (all traced arrays).

  Attributes:
    users: [chunk_size] int32 user id of each row; padding rows hold user 0 (their scores are
      computed but never counted).
    train_rows: [train_max_len] int32 row (0..chunk_size - 1) of each of the chunk's distinct
      training pairs, sorted by row then item; chunk_size (out of range) for entries that are not
      the chunk's pairs, so a scatter with mode="drop" skips them.
    train_items: [train_max_len] int32 item of each training pair.
  """

  users: jax.Array
  train_rows: jax.Array
  train_items: jax.Array


# score_fn(params, chunk) -> [chunk_size, num_items] scores of the chunk's rows. It runs inside
# jit and lax.map, so it must be traceable; params is any pytree of arrays.
ScoreFn = Callable[[Any, ScoreChunk], jax.Array]


def _dot_scores(params: tuple[jax.Array, jax.Array], chunk: ScoreChunk) -> jax.Array:
  """user_emb[users] @ item_emb.T in float32: the scores of `evaluate`."""
  user_emb, item_emb = params
  # HIGHEST: full float32 products on GPU/TPU too (their default may round through TF32/bf16),
  # so near-ties rank as with the float32 reference. A no-op on CPU.
  return jnp.dot(
    user_emb[chunk.users].astype(jnp.float32),
    item_emb.astype(jnp.float32).T,
    precision=jax.lax.Precision.HIGHEST,
  )


@functools.partial(jax.jit, static_argnames=("score_fn", "ks", "method", "mesh"))
def _evaluate_sums(
  score_fn: ScoreFn,
  params: Any,
  data: EvalData,
  ks: tuple[int, ...],
  method: str,
  mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Per-chunk metric sums; with a mesh, the chunks (users) split across its devices.

  Returns:
    sums: [num_chunks, 2 splits, 2 (all, tail), 4 metrics, len(ks)] float32.
    counts: [num_chunks, 2 splits, 2 (all, tail)] int32 counted users.
  """
  size = data.chunk_size
  k_max = max(ks)

  def one_chunk(chunk: jax.Array, params: Any, data: EvalData) -> tuple[jax.Array, jax.Array]:
    first = chunk * size
    users = jax.lax.dynamic_slice_in_dim(data.user_ids, first, size)
    mask_rows = _chunk_rows(data.train_rows, data.train_offsets, chunk, data.train_max_len, size)
    mask_items = _window(data.train_items, data.train_offsets, chunk, data.train_max_len)
    scores = score_fn(params, ScoreChunk(users=users, train_rows=mask_rows, train_items=mask_items))
    if scores.shape != (size, data.num_items):
      raise ValueError(
        f"score_fn returned shape {scores.shape}, expected "
        f"(chunk_size, num_items) = {(size, data.num_items)}"
      )
    scores = scores.astype(jnp.float32)

    offsets, length = data.heldout_offsets, data.heldout_max_len
    pairs = _ChunkPairs(
      train_rows=mask_rows,
      train_items=mask_items,
      rows=_chunk_rows(data.heldout_rows, offsets, chunk, length, size),
      items=_window(data.heldout_items, offsets, chunk, length),
      flags=_window(data.heldout_flags, offsets, chunk, length),
      slots=_window(data.heldout_slots, offsets, chunk, length),
    )
    if method == "top_k":
      labels = _labels_top_k(scores, pairs, k_max)
    else:
      first_pass = data.pass_offsets[chunk]
      labels = _labels_count(
        scores,
        pairs,
        data.pass_items,
        first_pass,
        data.pass_offsets[chunk + 1] - first_pass,
        data.max_passes,
        k_max,
      )

    tail = (labels & TAIL_FLAG) != 0
    n_all = jax.lax.dynamic_slice_in_dim(data.num_heldout, first, size)
    n_tail = jax.lax.dynamic_slice_in_dim(data.num_heldout_tail, first, size)
    sums, counts = [], []
    for s, flag in enumerate(SPLIT_FLAGS):
      hit = (labels & flag) != 0
      for h, n in ((hit, n_all[:, s]), (hit & tail, n_tail[:, s])):
        m, c = _metric_sums(h, n, ks)
        sums.append(m)
        counts.append(c)
    return (
      jnp.stack(sums).reshape(2, 2, len(METRICS), len(ks)),
      jnp.stack(counts).reshape(2, 2),
    )

  if mesh is None or mesh.size == 1:
    chunks = jnp.arange(data.num_chunks, dtype=jnp.int32)
    return jax.lax.map(lambda chunk: one_chunk(chunk, params, data), chunks)
  return _chunks_over_devices(one_chunk, (params, data), data.num_chunks, mesh)


def _chunks_over_devices(
  one_chunk: Callable[..., Any], operands: tuple, num_chunks: int, mesh: Mesh
) -> tuple[jax.Array, jax.Array]:
  """`lax.map(one_chunk(chunk, *operands), chunks)` with the chunks split across the mesh's
  (1-D) devices, the operands replicated.

  Device d scores chunks d * c .. (d + 1) * c - 1 (c = ceil(num_chunks / devices); the last
  device's extra chunks repeat the last real one and are dropped), so each device holds one
  chunk's [chunk_size, num_items] scores at a time and the users are split across devices (and
  hosts). The per-chunk sums are gathered to every device, so the result is replicated and the
  host adds them up exactly as on one device.
  """
  (axis,) = mesh.axis_names
  per_device = -(-num_chunks // mesh.size)
  chunks = jnp.arange(mesh.size * per_device, dtype=jnp.int32).reshape(mesh.size, per_device)

  def local(ids: jax.Array, *operands):
    ids = jnp.minimum(ids[0], num_chunks - 1)
    out = jax.lax.map(lambda chunk: one_chunk(chunk, *operands), ids)
    return jax.tree.map(lambda x: jax.lax.all_gather(x, axis, tiled=True), out)

  # No gradients flow here, so the varying-axis checks (which the loops' carries would need
  # annotated) are off; the all_gather makes the outputs replicated, as out_specs says.
  out = jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(PartitionSpec(axis), *(PartitionSpec() for _ in operands)),
    out_specs=PartitionSpec(),
    check_vma=False,
  )(chunks, *operands)
  return jax.tree.map(lambda x: x[:num_chunks], out)


def default_method() -> str:
  """ "count" on CPU (the faster there, benchmarks/README.md), "top_k" on accelerators."""
  return "count" if jax.default_backend() == "cpu" else "top_k"


def _check_options(
  ks: Sequence[int], method: str | None, data: EvalData
) -> tuple[tuple[int, ...], str]:
  """Sorted distinct cutoffs and the method, validated against the dataset."""
  ks = tuple(sorted({int(k) for k in ks}))
  if not ks or ks[0] < 1 or ks[-1] > data.num_items:
    raise ValueError(f"ks must be in 1..num_items={data.num_items}, got {ks}")
  method = default_method() if method is None else method
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  return ks, method


def evaluate(
  user_emb: jax.Array,
  item_emb: jax.Array,
  data: EvalData,
  *,
  ks: Sequence[int] = DEFAULT_KS,
  method: str | None = None,
  mesh: Mesh | None = None,
) -> dict[str, dict[str, float]]:
  """Full-ranking metrics on the validation and test splits from one scoring pass.

  Scores are user_emb @ item_emb.T in float32. Compiled once per (EvalData shape, embedding
  shapes, ks, method). A split (or its tail) with no counted user gets 0.0 for its metrics and a
  count of 0.

  Args:
    user_emb: [num_users, dim] user embeddings, indexed by user id.
    item_emb: [num_items, dim] item embeddings, indexed by item id.
    data: from `make_eval_data`.
    ks: cutoffs K, each in 1..num_items.
    method: "count" or "top_k" (see the module docstring); None picks `default_method()`.
    mesh: a 1-D device mesh (the training's): the users' chunks are split across its devices
      and hosts, the embeddings replicated on it. None: the default device.

  Returns:
    {"valid": {...}, "test": {...}}, each with "recall@K", "ndcg@K", "precision@K", "map@K",
    "tail_recall@K", "tail_ndcg@K", "tail_precision@K", "tail_map@K" for every K (floats), and
    "num_users", "num_tail_users" (ints: the users averaged over, overall and for the tail).
  """
  ks, method = _check_options(ks, method, data)
  if user_emb.shape[0] != data.num_users or item_emb.shape[0] != data.num_items:
    raise ValueError(
      f"embeddings {user_emb.shape}, {item_emb.shape} do not match the dataset's "
      f"{data.num_users} users, {data.num_items} items"
    )
  return evaluate_scores(_dot_scores, (user_emb, item_emb), data, ks=ks, method=method, mesh=mesh)


def evaluate_scores(
  score_fn: ScoreFn,
  params: Any,
  data: EvalData,
  *,
  ks: Sequence[int] = DEFAULT_KS,
  method: str | None = None,
  mesh: Mesh | None = None,
) -> dict[str, dict[str, float]]:
  """`evaluate` for any scorer: the same masking, ranking and metrics, scores from `score_fn`.

  For recommenders whose scores are not a dot product of two embedding tables (for example
  item-kNN over the user's training items, `feature_quality.evaluate_item_knn`). The scores of a
  chunk are computed on device inside the jitted loop, so no [num_users, num_items] array exists.

  Args:
    score_fn: score_fn(params, chunk) -> [chunk_size, num_items] scores of the chunk's rows, cast
      to float32 (see `ScoreChunk`); must be traceable and hashable (a module-level function, not
      a fresh lambda per call, or every call compiles again). Scores must not be NaN.
    params: pytree of arrays passed to score_fn (traced: new values reuse the compiled code).
    data: from `make_eval_data`.
    ks: cutoffs K, each in 1..num_items.
    method: "count" or "top_k" (see the module docstring); None picks `default_method()`.
    mesh: as `evaluate`'s.

  Returns:
    The same dictionary as `evaluate`.
  """
  ks, method = _check_options(ks, method, data)
  sums, counts = jax.device_get(_evaluate_sums(score_fn, params, data, ks, method, mesh))
  return _results(sums, counts, ks)


@functools.partial(jax.jit, static_argnames=("ks", "method"))
def _evaluate_members_sums(
  user_emb: jax.Array, item_emb: jax.Array, data: EvalData, ks: tuple[int, ...], method: str
) -> tuple[jax.Array, jax.Array]:
  return jax.vmap(
    lambda u, i: _evaluate_sums(_dot_scores, (u, i), data, ks, method), in_axes=(0, 0)
  )(user_emb, item_emb)


def evaluate_members(
  user_emb: jax.Array,
  item_emb: jax.Array,
  data: EvalData,
  *,
  ks: Sequence[int] = DEFAULT_KS,
  method: str | None = None,
) -> list[dict[str, dict[str, float]]]:
  """`evaluate` for K models at once (a vmapped ensemble's members): one compiled pass.

  On an accelerator one small model's evaluation leaves the device idle (its chunks run one
  after another); K models' chunks run side by side, so evaluating K costs little more than one.

  Args:
    user_emb: [K, num_users, dim] each member's user embeddings.
    item_emb: [K, num_items, dim] each member's item embeddings.
    data, ks, method: as `evaluate`'s.

  Returns:
    Per member, the dictionary `evaluate` returns for it.
  """
  ks, method = _check_options(ks, method, data)
  if user_emb.shape[1] != data.num_users or item_emb.shape[1] != data.num_items:
    raise ValueError(
      f"embeddings {user_emb.shape}, {item_emb.shape} do not match the dataset's "
      f"{data.num_users} users, {data.num_items} items (members on the leading axis)"
    )
  sums, counts = jax.device_get(_evaluate_members_sums(user_emb, item_emb, data, ks, method))
  return [_results(s, c, ks) for s, c in zip(sums, counts, strict=True)]


def _results(sums: np.ndarray, counts: np.ndarray, ks: tuple[int, ...]) -> dict:
  """The metric dictionary of one model from its per-chunk sums and counts."""
  # Chunks are added up in float64 on the host.
  sums = np.asarray(sums, np.float64).sum(axis=0)  # [2, 2, 4, len(ks)]
  counts = np.asarray(counts, np.int64).sum(axis=0)  # [2, 2]

  results = {}
  for s, split in enumerate(HELDOUT_SPLITS):
    out: dict[str, float] = {}
    for v, prefix in enumerate(("", "tail_")):
      denom = max(int(counts[s, v]), 1)
      for m, metric in enumerate(METRICS):
        for j, k in enumerate(ks):
          out[f"{prefix}{metric}@{k}"] = float(sums[s, v, m, j] / denom)
    out["num_users"] = int(counts[s, 0])
    out["num_tail_users"] = int(counts[s, 1])
    results[split] = out
  return results
