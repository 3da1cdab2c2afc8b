"""A trained stage-2 run, loaded for use: its embeddings, recommendations and scores.

    run = load_run("runs/ml100k")   # a pipeline: the stage-2 run it selected, best epoch
    items, scores = run.recommend(["196", "186"], k=10)   # the dataset's own user ids
    run.score(["196"], ["242"])

The run's config comes from its checkpoint, the data and graphs are set up as training set them
up, and the final user and item embeddings are computed once on load. Ids are the dataset's own
where its folder holds id-mapping files (`data/ids.py`), else the internal 0..n-1; `internal=True`
takes and returns internal ids either way. Scoring runs on device, users in fixed-size chunks
with the items to exclude scattered in per chunk, so nothing is ever users x items.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alignrec_jax.data import Interactions
from alignrec_jax.data.ids import IdMap, read_id_maps
from alignrec_jax.errors import UserError, WorkdirError
from alignrec_jax.training import loop, record, reporting, stage2
from alignrec_jax.training.checkpoint import Checkpointer
from alignrec_jax.training.stage2_setup import build_experiment, dataset_folder

CHUNK_USERS = 1024  # users scored per device call


class QueryError(UserError, ValueError):
  """A request the run cannot answer: an unknown id, or a k larger than the catalogue."""

  exit_code = 2


def _csr(pairs: Interactions, num_users: int) -> tuple[np.ndarray, np.ndarray]:
  """(indptr [U + 1], items) of one split's (user, item) pairs, grouped by user."""
  order = np.argsort(pairs.users, kind="stable")
  counts = np.bincount(pairs.users, minlength=num_users)
  return np.concatenate([[0], np.cumsum(counts)]), pairs.items[order]


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k(user_rows, item_emb, mask_rows, mask_items, *, k: int):
  """Top-k items of each row of user_rows [n, d]: (items [n, k], scores [n, k]).

  The pairs (mask_rows, mask_items) are excluded (rows past n are padding); ties rank the lower
  item id first, as `lax.top_k` does and the evaluation counts.
  """
  scores = jnp.dot(user_rows, item_emb.T, precision=jax.lax.Precision.HIGHEST)
  scores = scores.at[mask_rows, mask_items].set(-jnp.inf, mode="drop")
  top_scores, top_items = jax.lax.top_k(scores, k)
  return top_items, top_scores


@dataclasses.dataclass
class TrainedRun:
  """A stage-2 run's final embeddings and what its recommendations exclude.

  Attributes:
    config: the config the run was trained with.
    workdir: the run's folder.
    epoch: the epoch of the parameters loaded.
    user_embeddings: [U, d] float32, row u = internal user u.
    item_embeddings: [I, d] float32.
    users: the original user ids (None: the dataset has no mapping file).
    items: the original item ids and descriptions (None: no mapping file).
    num_users, num_items: the rows of the embeddings.
  """

  config: ml_collections.ConfigDict
  workdir: str
  epoch: int
  user_embeddings: np.ndarray
  item_embeddings: np.ndarray
  users: IdMap | None
  items: IdMap | None
  _train: tuple[np.ndarray, np.ndarray]  # (indptr [U + 1], items): the training pairs by user
  _valid: tuple[np.ndarray, np.ndarray]
  num_users: int = dataclasses.field(init=False)
  num_items: int = dataclasses.field(init=False)

  def __post_init__(self):
    self.num_users, self.num_items = len(self.user_embeddings), len(self.item_embeddings)

  def internal_users(self, ids: Sequence, *, internal: bool = False) -> np.ndarray:
    """Internal user ids of `ids` (the dataset's own, or internal with `internal=True`)."""
    return self._internal(ids, self.users, self.num_users, "user", internal)

  def internal_items(self, ids: Sequence, *, internal: bool = False) -> np.ndarray:
    return self._internal(ids, self.items, self.num_items, "item", internal)

  @staticmethod
  def _internal(ids, mapping: IdMap | None, count: int, what: str, internal: bool) -> np.ndarray:
    if isinstance(ids, str | int | np.integer):
      raise QueryError(f"{what} ids must be a sequence, got {ids!r}: wrap a single id in a list")
    if mapping is not None and not internal:
      try:
        return mapping.internal(list(ids))
      except UserError as e:
        raise QueryError(f"unknown {what} id(s): {e}") from None
    values = np.asarray(list(ids))
    if values.size and (
      not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() >= count
    ):
      bad = [x for x in values.tolist() if not (isinstance(x, int) and 0 <= x < count)][:5]
      raise QueryError(f"unknown {what} id(s) {bad}: internal ids are 0..{count - 1}")
    return values.astype(np.int64)

  def _excluded(
    self, users: np.ndarray, exclude_seen: bool, exclude_valid: bool
  ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items) of the pairs to exclude for `users` (rows index `users`)."""
    rows, items = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for use, (indptr, values) in ((exclude_seen, self._train), (exclude_valid, self._valid)):
      if not use:
        continue
      counts = indptr[users + 1] - indptr[users]
      rows.append(np.repeat(np.arange(len(users)), counts))
      items.append(
        np.concatenate([values[indptr[u] : indptr[u + 1]] for u in users])
        if len(users)
        else np.zeros(0, np.int64)
      )
    return np.concatenate(rows), np.concatenate(items)

  def top_k(
    self, users: np.ndarray, k: int, *, exclude_seen: bool = True, exclude_valid: bool = False
  ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(users, items, scores) chunk by chunk over internal `users`: [c], [c, k], [c, k].

    Each chunk is scored on device with a fixed shape (the last padded), so it compiles once
    per padded size of the excluded pairs (rounded up to a power of two). An item past the
    user's unexcluded ones (k > what is left) comes back as -1 with score -inf.
    """
    if not 1 <= k <= self.num_items:
      raise QueryError(f"k must be in 1..{self.num_items} (the catalogue), got {k}")
    item_emb = jnp.asarray(self.item_embeddings)
    for start in range(0, len(users), CHUNK_USERS):
      chunk = users[start : start + CHUNK_USERS]
      padded = np.resize(chunk, CHUNK_USERS) if len(chunk) < CHUNK_USERS else chunk
      rows, items = self._excluded(chunk, exclude_seen, exclude_valid)
      size = 1 << max(int(len(rows)) - 1, 0).bit_length()
      rows = np.concatenate([rows, np.full(size - len(rows), CHUNK_USERS)]).astype(np.int32)
      items = np.concatenate([items, np.zeros(size - len(items))]).astype(np.int32)
      top, scores = jax.device_get(
        _top_k(jnp.asarray(self.user_embeddings[padded]), item_emb, rows, items, k=k)
      )
      top, scores = top[: len(chunk)], scores[: len(chunk)]
      yield chunk, np.where(np.isneginf(scores), -1, top), scores

  def recommend(
    self,
    users: Sequence,
    k: int = 10,
    *,
    exclude_seen: bool = True,
    exclude_valid: bool = False,
    internal: bool = False,
  ) -> tuple[np.ndarray, np.ndarray]:
    """The top-k items of each user: (items [n, k], scores [n, k] float32).

    Args:
      users: user ids, the dataset's own (or internal with `internal=True`).
      k: items per user, 1..num_items.
      exclude_seen: leave out each user's training items.
      exclude_valid: leave out its validation items too.
      internal: take and return internal ids.

    Raises:
      QueryError: an unknown user id, or k out of range.
    """
    ids = self.internal_users(users, internal=internal)
    parts = list(self.top_k(ids, k, exclude_seen=exclude_seen, exclude_valid=exclude_valid))
    if not parts:
      return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    items = np.concatenate([p[1] for p in parts])
    scores = np.concatenate([p[2] for p in parts])
    if self.items is None or internal:
      return items, scores
    original = np.append(self.items.original, None)  # -1 (nothing left) -> None
    return original[items], scores

  def score(self, users: Sequence, items: Sequence, *, internal: bool = False) -> np.ndarray:
    """Scores z_u . z_i of the pairs (users[j], items[j]): [n] float32."""
    u = self.internal_users(users, internal=internal)
    i = self.internal_items(items, internal=internal)
    if len(u) != len(i):
      raise QueryError(f"{len(u)} users but {len(i)} items: score takes pairs")
    return np.einsum("nd,nd->n", self.user_embeddings[u], self.item_embeddings[i])


def load_run(workdir: str, checkpoint: str | int = "best") -> TrainedRun:
  """Loads a stage-2 run for recommendation.

  Args:
    workdir: the run's folder: a `launch.train` workdir, a pipeline's WORKDIR/stage2 (or
      stage2_<input>), or a pipeline's WORKDIR itself for the stage-2 run it selected.
    checkpoint: "best" (the best validation epoch's parameters), "latest" (the newest kept
      checkpoint) or an epoch number among those kept.

  Raises:
    WorkdirError: no such run or checkpoint.
  """
  selected = record.selected_run(workdir)
  if selected is not None:
    reporting.log(f"{workdir} holds a pipeline: loading the stage-2 run it selected, {selected}")
    workdir = selected
  summary = record.read_summary(workdir)  # (a workdir of an older format is refused here)
  if summary is None:
    reporting.log(f"{workdir} holds a run that has not finished: loading what it has so far")
  best_dir = os.path.join(workdir, loop.BEST_DIR)
  use_best = checkpoint == "best" or (
    not isinstance(checkpoint, str) and os.path.isdir(os.path.join(best_dir, str(checkpoint)))
  )
  directory = best_dir if use_best else os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise WorkdirError(f"{directory}: not found; is {workdir} a trained stage-2 run?")
  with Checkpointer(directory) as checkpointer:
    kept = checkpointer.epochs()
    if not kept:
      raise WorkdirError(f"{directory} holds no checkpoint yet")
    if checkpoint in ("best", "latest"):
      epoch = kept[-1]
    elif isinstance(checkpoint, int | np.integer) or str(checkpoint).isdigit():
      epoch = int(checkpoint)
    else:
      raise QueryError(f"checkpoint must be 'best', 'latest' or an epoch, got {checkpoint!r}")
    # The config rides in the metadata: read it first, to set the run up and shape the target.
    config = ml_collections.ConfigDict(checkpointer.read_meta(epoch)["config"])
    exp = build_experiment(config, workdir)
    recommender = stage2.build_recommender(config, exp)
    shape = jax.eval_shape(recommender.init_state, jax.random.key(0), exp.train_data)
    target = {"params": shape.params} if use_best else shape
    state, _ = checkpointer.read(epoch, target)
  # On the devices the data was set up on (the run's config.parallel; one here or many).
  params = exp.parallel.replicate(state["params"] if use_best else state.params)
  users, items = (np.asarray(x) for x in recommender.make_embed()(params, exp.train_data))
  dataset = exp.dataset
  user_ids, item_ids = read_id_maps(
    dataset_folder(config.data, workdir),
    num_users=dataset.num_users,
    num_items=dataset.num_items,
  )
  train, valid = (_csr(split, dataset.num_users) for split in (dataset.train, dataset.valid))
  return TrainedRun(config, workdir, epoch, users, items, user_ids, item_ids, train, valid)
