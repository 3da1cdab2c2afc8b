"""Negative sampling on device: uniform over training items, exactly excluding the user's own.

The reference samples in a Python loop on the host. Here a batch of candidates is drawn at once
and every candidate that the user has in training is redrawn, all in a `lax.while_loop`, until
none is left: each accepted negative is then exactly uniform over the training items the user
has not interacted with. Membership is a vectorised binary search in the user's sorted row of
a CSR of the training interactions, so memory is O(interactions), never O(users x items).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from alignrec_jax.data.dataset import Interactions
from alignrec_jax.errors import DataError


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NegativeSampler:
  """The training interactions, laid out for membership tests on device.

  Attributes:
    indptr: [num_users + 1] int32; user u's items are items[indptr[u]:indptr[u+1]].
    items: [num_train] int32, ascending within each user.
    candidates: [num_candidates] int32, the distinct items seen in training (the sampling pool).
    search_steps: binary-search iterations, enough for the longest user row.
  """

  indptr: jax.Array
  items: jax.Array
  candidates: jax.Array
  search_steps: int = dataclasses.field(metadata=dict(static=True))

  @classmethod
  def from_interactions(cls, train: Interactions, *, num_users: int) -> NegativeSampler:
    order = np.lexsort((train.items, train.users))
    counts = np.bincount(train.users, minlength=num_users)
    candidates = np.unique(train.items)
    full = np.flatnonzero(counts >= candidates.shape[0])
    if full.size:
      raise DataError(
        f"user {full[0]} has interacted with all {candidates.shape[0]} training "
        "items: no negative item exists for it"
      )
    return cls(
      indptr=jnp.asarray(np.concatenate([[0], np.cumsum(counts)]), jnp.int32),
      items=jnp.asarray(train.items[order], jnp.int32),
      candidates=jnp.asarray(candidates, jnp.int32),
      search_steps=max(1, math.ceil(math.log2(int(counts.max()) + 1))),
    )

  def contains(self, users: jax.Array, items: jax.Array) -> jax.Array:
    """[B] bool: whether each (users[k], items[k]) is a training interaction."""
    lo = self.indptr[users]
    end = self.indptr[users + 1]
    hi = end
    last = self.items.shape[0] - 1

    def step(_, bounds):
      lo, hi = bounds
      mid = (lo + hi) // 2
      go_right = self.items[jnp.minimum(mid, last)] < items
      active = lo < hi
      return (jnp.where(active & go_right, mid + 1, lo), jnp.where(active & ~go_right, mid, hi))

    lo, _ = jax.lax.fori_loop(0, self.search_steps + 1, step, (lo, hi))
    return (lo < end) & (self.items[jnp.minimum(lo, last)] == items)

  def sample(self, key: jax.Array, users: jax.Array) -> jax.Array:
    """One negative per user: [B] int32 items the user does not have in training."""

    def draw(key):
      picks = jax.random.randint(key, users.shape, 0, self.candidates.shape[0])
      return self.candidates[picks]

    key, first = jax.random.split(key)
    items = draw(first)
    rejected = self.contains(users, items)

    def redraw(carry):
      key, items, rejected = carry
      key, sub = jax.random.split(key)
      items = jnp.where(rejected, draw(sub), items)
      return key, items, rejected & self.contains(users, items)

    _, items, _ = jax.lax.while_loop(lambda c: jnp.any(c[2]), redraw, (key, items, rejected))
    return items


def degree_sensitive_edges(
  key: jax.Array, users: jax.Array, items: jax.Array, *, num_users: int, num_items: int, keep: int
) -> tuple[jax.Array, jax.Array]:
  """FREEDOM's edge pruning: `keep` of the (user, item) edges, drawn without replacement with
  probability proportional to 1 / sqrt(deg_u deg_i) (rare users' and items' edges favoured).

  MMRec draws them with `torch.multinomial(weights, keep)`; Gumbel top-k (the `keep` largest of
  log w + Gumbel noise) draws from that same distribution, in one vectorised pass on device.

  Returns:
    (users [keep], items [keep]) of the kept edges.
  """
  user_degree = jnp.zeros(num_users, jnp.float32).at[users].add(1.0)
  item_degree = jnp.zeros(num_items, jnp.float32).at[items].add(1.0)
  log_weights = -0.5 * (jnp.log(user_degree[users]) + jnp.log(item_degree[items]))
  _, kept = jax.lax.top_k(log_weights + jax.random.gumbel(key, log_weights.shape), keep)
  return users[kept], items[kept]
