"""What the stage-2 models share: the graph operators, the batch, and PyTorch-equal initialisers.

Early-epoch parity with the authors' PyTorch code depends on matching its initialisation:
embedding tables are Xavier-uniform, Linear layers use PyTorch's default (weight and bias uniform
in +-1/sqrt(fan_in)).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from alignrec_jax.propagation import SparseOperator

xavier_uniform = jax.nn.initializers.xavier_uniform()


def torch_linear_init(fan_in: int) -> jax.nn.initializers.Initializer:
  """PyTorch's nn.Linear default for both weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Graphs:
  """The fixed graphs of stage 2, on device; arguments of every jitted function.

  Attributes:
    user_item: A_hat, [U + I, U + I], the normalised user-item graph.
    user_item_block: R_hat, [U, I], its user rows (users aggregate items).
    item_knn: S, [I, I], the normalised item kNN graph (None for models without content).
  """

  user_item: SparseOperator
  user_item_block: SparseOperator | None = None
  item_knn: SparseOperator | None = None


class Batch(NamedTuple):
  """B training triples; `mask` is 0 on the padding of the last partial batch."""

  users: jax.Array  # [B] int32
  pos_items: jax.Array  # [B] int32
  neg_items: jax.Array  # [B] int32
  mask: jax.Array  # [B] float32


class Embeddings(NamedTuple):
  """Final and per-branch representations of every user and item."""

  users: jax.Array  # [U, d] z_u, used for scoring
  items: jax.Array  # [I, d] z_i
  ego_users: jax.Array  # [U, d] the layer-0 ID table E_u
  ego_items: jax.Array  # [I, d] E_i
  id_users: jax.Array  # [U, d] ID branch (LightGCN) C_u
  id_items: jax.Array  # [I, d] C_i
  content_users: jax.Array | None = None  # [U, d] content branch M_u (AlignRec only)
  content_items: jax.Array | None = None  # [I, d] M_i
