"""The evaluation index: everything full-ranking evaluation needs of a dataset, built once.

Built on the host with NumPy (`make_eval_data`), then put on device once: the evaluated users in
fixed-size chunks, each chunk's training pairs (masked out of the ranking) and held-out pairs
(with their split and tail flags), as flat arrays sorted by user with per-chunk offsets, so no
[num_users, num_items] array is ever built. `evaluate.py` scores and ranks with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from alignrec_jax.data.dataset import Dataset, Interactions

# A [256, num_items] score block stays in a CPU's last-level cache across the counting passes
# at Baby scale (benchmarks/bench_evaluate.py --chunk_sizes compares sizes on a machine).
DEFAULT_CHUNK_SIZE = 256
HELDOUT_SPLITS = ("valid", "test")
# Bit flags of a held-out pair: in the validation split, in the test split, a tail item. One int8
# label per pair serves both splits and both variants.
VALID_FLAG, TEST_FLAG, TAIL_FLAG = 1, 2, 4
SPLIT_FLAGS = (VALID_FLAG, TEST_FLAG)
_STATIC = dict(static=True)  # pytree metadata, not arrays: `evaluate` compiles per value


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EvalData:
  """Evaluation index of one dataset: every array is O(interactions + users + items).

  A pytree: the arrays are leaves (numpy on the host, or device arrays after `jax.device_put`), the
  ints are static metadata, so `evaluate` compiles once per EvalData shape. Below, P =
  num_chunks * chunk_size (evaluation rows, padded), T the distinct training pairs and H the
  distinct held-out pairs (valid and test merged) of evaluated users.

  Rows: evaluated users sorted by decreasing number of distinct held-out items, ties by user id
  (see the module docstring, method "count"); the order does not change any metric.

  Attributes:
    user_ids: [P] int32 user id of each evaluation row; padding rows hold user 0.
    num_heldout: [P, 2] int32 held-out items per row in (valid, test); 0 on padding rows.
    num_heldout_tail: [P, 2] int32 held-out tail items per row in (valid, test).
    is_tail: [num_items] bool, True for long-tail items.
    train_rows: [T + train_max_len] int32 row of each training pair within its chunk
      (0..chunk_size - 1), sorted by evaluation row; the trailing padding holds chunk_size, an
      out-of-range row, so that a fixed-length window starting at any chunk's offset stays in
      bounds.
    train_items: [T + train_max_len] int32 item of each training pair; 0 on padding.
    train_offsets: [num_chunks + 1] int32, chunk c's pairs are [offsets[c], offsets[c + 1]).
    heldout_rows, heldout_items: [H + heldout_max_len] int32 held-out pairs, laid out like the
      training pairs (sorted by row, then item).
    heldout_flags: [H + heldout_max_len] int8 bits: 1 in valid, 2 in test, 4 tail item.
    heldout_slots: [H + heldout_max_len] int32 index of the pair among its row's held-out pairs.
    heldout_offsets: [num_chunks + 1] int32 per-chunk offsets into the held-out pairs.
    pass_items: [Q + 1, chunk_size] int32 the held-out items ranked by each counting pass (method
      "count"): chunk c makes passes m = 0..M_c - 1, M_c its rows' most held-out pairs, and pass m
      ranks item pass_items[pass_offsets[c] + m, r] for row r (its m-th held-out item, or item 0
      when it has fewer; unused). Rows are sorted by decreasing held-out count, so M_c is at most
      the mean count of chunk c - 1 and Q = sum of M_c <= M_0 + H / chunk_size: the table holds at
      most H + (M_0 + 1) * chunk_size entries. The extra row keeps it nonempty.
    pass_offsets: [num_chunks + 1] int32 first pass_items row of each chunk.
    num_users: users of the dataset (rows of the user embedding table).
    num_items: items of the dataset (rows of the item embedding table).
    num_eval_users: users with at least one training interaction (the evaluated ones).
    chunk_size: users scored per step.
    num_chunks: ceil(num_eval_users / chunk_size).
    num_head_items: int(round(head_fraction * num_items)) most trained items are head, the rest
      tail (Python's round: an exact half goes to the even integer).
    train_max_len: most training pairs in one chunk (the static per-chunk window length).
    heldout_max_len: most held-out pairs in one chunk.
    max_passes: most counting passes of one chunk (M_0, at least 1).
  """

  user_ids: np.ndarray | jax.Array
  num_heldout: np.ndarray | jax.Array
  num_heldout_tail: np.ndarray | jax.Array
  is_tail: np.ndarray | jax.Array
  train_rows: np.ndarray | jax.Array
  train_items: np.ndarray | jax.Array
  train_offsets: np.ndarray | jax.Array
  heldout_rows: np.ndarray | jax.Array
  heldout_items: np.ndarray | jax.Array
  heldout_flags: np.ndarray | jax.Array
  heldout_slots: np.ndarray | jax.Array
  heldout_offsets: np.ndarray | jax.Array
  pass_items: np.ndarray | jax.Array
  pass_offsets: np.ndarray | jax.Array
  num_users: int = dataclasses.field(metadata=_STATIC)
  num_items: int = dataclasses.field(metadata=_STATIC)
  num_eval_users: int = dataclasses.field(metadata=_STATIC)
  chunk_size: int = dataclasses.field(metadata=_STATIC)
  num_chunks: int = dataclasses.field(metadata=_STATIC)
  num_head_items: int = dataclasses.field(metadata=_STATIC)
  train_max_len: int = dataclasses.field(metadata=_STATIC)
  heldout_max_len: int = dataclasses.field(metadata=_STATIC)
  max_passes: int = dataclasses.field(metadata=_STATIC)


def _pair_keys(rows: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
  """Distinct (row, item) pairs as sorted int64 keys row * num_items + item."""
  return np.unique(rows.astype(np.int64) * num_items + items.astype(np.int64))


def _chunk_layout(
  rows: np.ndarray, num_chunks: int, chunk_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
  """Per-chunk layout of pairs sorted by evaluation row.

  Args:
    rows: [n] evaluation row (0..num_chunks * chunk_size - 1) of each pair, sorted ascending.
    num_chunks: number of user chunks.
    chunk_size: rows per chunk.

  Returns:
    local_rows: [n + max_len] int32 row within its chunk, padded with chunk_size (out of range).
    offsets: [num_chunks + 1] int32 start of each chunk's pairs.
    max_len: most pairs in one chunk (at least 1, so every window has a nonzero static length).
  """
  counts = np.bincount(rows // chunk_size, minlength=num_chunks)
  offsets = np.zeros(num_chunks + 1, np.int64)
  np.cumsum(counts, out=offsets[1:])
  max_len = max(int(counts.max(initial=0)), 1)
  local = np.concatenate([rows % chunk_size, np.full(max_len, chunk_size)]).astype(np.int32)
  return local, offsets.astype(np.int32), max_len


def _padded(values: np.ndarray, pad: int, dtype: type) -> np.ndarray:
  return np.concatenate([values, np.zeros(pad, values.dtype)]).astype(dtype)


def make_eval_data(
  dataset: Dataset,
  *,
  chunk_size: int = DEFAULT_CHUNK_SIZE,
  head_fraction: float = 0.2,
) -> EvalData:
  """Builds the evaluation index of `dataset` on the host (numpy), once per dataset.

  Users evaluated: those with at least one training interaction. Held-out pairs of other users are
  ignored (the loader has already dropped them). Duplicate pairs within a split count once. A
  held-out item that is also one of the user's training items counts in n but is masked out of
  the ranking, so it is never a hit (as in MMRec).

  Long tail: items are sorted by training count, descending, ties by lower item id; the first
  int(round(head_fraction * num_items)) are head items, the rest (never-trained items included)
  tail.

  Args:
    dataset: the dataset; only `num_users`, `num_items` and the three splits are read.
    chunk_size: users scored per device step; device memory per step is about
      chunk_size * num_items * 8 bytes (float32 scores, plus int32 keys for "count" or int8
      labels for "top_k").
    head_fraction: fraction of the items, by training popularity, that are head items.

  Returns:
    The EvalData of numpy arrays.
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  if not 0.0 <= head_fraction <= 1.0:
    raise ValueError(f"head_fraction must be in [0, 1], got {head_fraction}")
  num_users, num_items = int(dataset.num_users), int(dataset.num_items)
  for name in ("train", *HELDOUT_SPLITS):
    split = dataset.split(name)
    for ids, bound, what in ((split.users, num_users, "user"), (split.items, num_items, "item")):
      if len(ids) and (ids.min() < 0 or ids.max() >= bound):
        raise ValueError(
          f"{name} split: {what} ids must be in [0, {bound}), got [{ids.min()}, {ids.max()}]"
        )
  train_users = np.asarray(dataset.train.users, np.int64)
  train_items = np.asarray(dataset.train.items, np.int64)

  eval_users = np.unique(train_users)
  num_eval = int(eval_users.shape[0])
  if num_eval == 0:
    raise ValueError("no user has a training interaction: nothing to evaluate")
  num_chunks = -(-num_eval // chunk_size)
  padded = num_chunks * chunk_size
  # Index of each user id in eval_users, -1 for users without training interactions.
  index_of_user = np.full(num_users, -1, np.int64)
  index_of_user[eval_users] = np.arange(num_eval)

  train_count = np.bincount(train_items, minlength=num_items)
  # A stable sort on -count keeps ties in increasing item id order.
  by_popularity = np.argsort(-train_count, kind="stable")
  num_head = int(round(head_fraction * num_items))
  is_tail = np.ones(num_items, bool)
  is_tail[by_popularity[:num_head]] = False

  # Held-out pairs of both splits, keyed by (eval index, item); a pair in both splits is merged.
  split_keys = []
  for name in HELDOUT_SPLITS:
    split = dataset.split(name)
    index = index_of_user[np.asarray(split.users, np.int64)]
    keep = index >= 0
    split_keys.append(_pair_keys(index[keep], np.asarray(split.items)[keep], num_items))
  heldout_keys = np.union1d(*split_keys)

  # Rows: most held-out pairs first, so each chunk's counting passes are bounded by its first row.
  per_user = np.bincount(heldout_keys // num_items, minlength=num_eval)
  order = np.lexsort((eval_users, -per_user))
  row_of_index = np.empty(num_eval, np.int64)
  row_of_index[order] = np.arange(num_eval)
  row_count = np.zeros(padded, np.int64)
  row_count[:num_eval] = per_user[order]
  num_passes = row_count.reshape(num_chunks, chunk_size).max(axis=1)
  pass_offsets = np.zeros(num_chunks + 1, np.int64)
  np.cumsum(num_passes, out=pass_offsets[1:])

  def rekey(keys: np.ndarray) -> np.ndarray:
    return np.sort(row_of_index[keys // num_items] * num_items + keys % num_items)

  heldout_keys = rekey(heldout_keys)
  h_rows, h_items = heldout_keys // num_items, heldout_keys % num_items
  flags = np.where(is_tail[h_items], TAIL_FLAG, 0)
  num_heldout = np.zeros((padded, 2), np.int32)
  num_heldout_tail = np.zeros((padded, 2), np.int32)
  for s, (keys, flag) in enumerate(zip(split_keys, SPLIT_FLAGS, strict=True)):
    keys = rekey(keys)
    rows, items = keys // num_items, keys % num_items
    num_heldout[:, s] = np.bincount(rows, minlength=padded)
    num_heldout_tail[:, s] = np.bincount(rows[is_tail[items]], minlength=padded)
    flags[np.isin(heldout_keys, keys, assume_unique=True)] |= flag
  row_starts = np.zeros(padded + 1, np.int64)
  np.cumsum(np.bincount(h_rows, minlength=padded), out=row_starts[1:])
  slots = np.arange(h_rows.shape[0]) - row_starts[h_rows]
  h_local, h_offsets, h_max = _chunk_layout(h_rows, num_chunks, chunk_size)
  pass_items = np.zeros((int(pass_offsets[-1]) + 1, chunk_size), np.int32)
  pass_items[pass_offsets[h_rows // chunk_size] + slots, h_rows % chunk_size] = h_items

  train_keys = _pair_keys(row_of_index[index_of_user[train_users]], train_items, num_items)
  t_rows, t_items = train_keys // num_items, train_keys % num_items
  t_local, t_offsets, t_max = _chunk_layout(t_rows, num_chunks, chunk_size)

  user_ids = np.zeros(padded, np.int32)
  user_ids[:num_eval] = eval_users[order]
  return EvalData(
    user_ids=user_ids,
    num_heldout=num_heldout,
    num_heldout_tail=num_heldout_tail,
    is_tail=is_tail,
    train_rows=t_local,
    train_items=_padded(t_items, t_max, np.int32),
    train_offsets=t_offsets,
    heldout_rows=h_local,
    heldout_items=_padded(h_items, h_max, np.int32),
    heldout_flags=_padded(flags, h_max, np.int8),
    heldout_slots=_padded(slots, h_max, np.int32),
    heldout_offsets=h_offsets,
    pass_items=pass_items,
    pass_offsets=pass_offsets.astype(np.int32),
    num_users=num_users,
    num_items=num_items,
    num_eval_users=num_eval,
    chunk_size=chunk_size,
    num_chunks=num_chunks,
    num_head_items=num_head,
    train_max_len=t_max,
    heldout_max_len=h_max,
    max_passes=max(int(num_passes.max()), 1),
  )


# ----------------------------------------------------------------------------- user subsets


def shortest_history_users(dataset: Dataset, fraction: float = 0.2) -> np.ndarray:
  """The users with the fewest training interactions.

  Among users with at least one training interaction (the evaluated ones), sorted by training
  interaction count ascending, ties by lower user id, the first max(1, round(fraction * n)) of
  them (Python's round: an exact half goes to the even integer). Counts are training rows; the
  loaders guarantee they are distinct pairs.

  Args:
    dataset: the dataset; only `num_users` and the training split are read.
    fraction: share of the evaluated users to keep, in (0, 1].

  Returns:
    [m] int32 user ids, in the order above (shortest history first).
  """
  fraction = float(fraction)
  if not 0.0 < fraction <= 1.0:  # also rejects NaN
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  num_users = int(dataset.num_users)
  users = np.asarray(dataset.train.users, np.int64)
  if users.size and (users.min() < 0 or users.max() >= num_users):
    raise ValueError(
      f"train split: user ids must be in [0, {num_users}), got [{users.min()}, {users.max()}]"
    )
  counts = np.bincount(users, minlength=num_users)
  trained = np.flatnonzero(counts > 0)
  if trained.size == 0:
    raise ValueError("no user has a training interaction")
  # lexsort: last key primary, so by count, then by id (trained is ascending already).
  order = trained[np.lexsort((trained, counts[trained]))]
  keep = max(1, int(round(fraction * trained.size)))
  return order[:keep].astype(np.int32)


def restrict_heldout(dataset: Dataset, users: Sequence[int] | np.ndarray) -> Dataset:
  """The dataset with all training interactions but only the held-out ones of `users`.

  Training is untouched, so the masked items, the evaluated ranking and the head / tail split of
  `make_eval_data` stay the same; only users in `users` keep valid and test interactions, so the
  metrics average over them alone (a user without held-out items in a split is not averaged for
  that split, as always).

  Args:
    dataset: the dataset.
    users: user ids to keep held-out interactions for; each in [0, num_users), repeats allowed.

  Returns:
    A new Dataset (name, features and load counters unchanged) with filtered valid and test.
  """
  ids = np.asarray(users)
  if ids.ndim != 1:
    raise ValueError(f"users must be a 1-D array of user ids, got shape {ids.shape}")
  if ids.size and not np.issubdtype(ids.dtype, np.integer):
    raise TypeError(f"users must be integer ids, got dtype {ids.dtype}")
  num_users = int(dataset.num_users)
  if ids.size and (ids.min() < 0 or ids.max() >= num_users):
    raise ValueError(f"user ids must be in [0, {num_users}), got [{ids.min()}, {ids.max()}]")
  keep_user = np.zeros(num_users, bool)
  keep_user[ids.astype(np.int64)] = True

  def restrict(split: Interactions) -> Interactions:
    split_users = np.asarray(split.users)
    if split_users.size and (split_users.min() < 0 or split_users.max() >= num_users):
      raise ValueError(
        f"held-out user ids must be in [0, {num_users}), got "
        f"[{split_users.min()}, {split_users.max()}]"
      )
    keep = keep_user[split_users]
    return Interactions(split.users[keep], split.items[keep])

  return dataclasses.replace(
    dataset, **{name: restrict(dataset.split(name)) for name in HELDOUT_SPLITS}
  )
