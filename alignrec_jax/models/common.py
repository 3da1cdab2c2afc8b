"""What the stage-2 models share: the graph operators, their output, the training batch, the
set-up options several models have, and PyTorch-equal initialisers.

Early-epoch parity with the authors' PyTorch code depends on matching its initialisation:
embedding tables are Xavier-uniform, Linear layers use PyTorch's default (weight and bias uniform
in +-1/sqrt(fan_in)).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignrec_jax import schema
from alignrec_jax.objectives import losses
from alignrec_jax.propagation import PartitionedOperator, SparseOperator

xavier_uniform = jax.nn.initializers.xavier_uniform()


def torch_linear_init(fan_in: int) -> jax.nn.initializers.Initializer:
  """PyTorch's nn.Linear default for both weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def project_modalities(
  features: jax.Array, feature_dims: tuple[int, ...], embed_dim: int
) -> list[jax.Array]:
  """Each modality's columns of F through a linear map of its own to `embed_dim`: submodules
  "modality_<m>" of the calling (compact) module, initialised as PyTorch's nn.Linear default,
  as MMRec leaves them (FREEDOM, MGCN)."""
  projected, start = [], 0
  for m, width in enumerate(feature_dims):
    init = torch_linear_init(width)
    dense = nn.Dense(embed_dim, kernel_init=init, bias_init=init, name=f"modality_{m}")
    projected.append(dense(features[:, start : start + width]))
    start += width
  return projected


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Graphs:
  """The fixed graphs of stage 2, on device; arguments of every jitted function.

  Attributes:
    user_item: A_hat, [U + I, U + I], the normalised user-item graph.
    user_item_block: R_hat, [U, I], its user rows (users aggregate items).
    item_knn: S, [I, I], the normalised item kNN graph (None for models without content).
  """

  user_item: SparseOperator | PartitionedOperator
  user_item_block: SparseOperator | PartitionedOperator | None = None
  item_knn: SparseOperator | PartitionedOperator | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Embeddings:
  """Node representations, users [0, U) then items [U, U + I), kept as whole tables.

  The final representation z = C + M is never formed for all nodes during training: the loss
  needs it only for the batch's rows (`user_rows`, `item_rows`), and skipping the full-table
  sums (and the concatenations and pads a split into user and item tables would add, forward
  and backward) saves memory traffic on every step.
  """

  ego: jax.Array  # [U + I, d] the layer-0 ID tables E = [E_u; E_i]
  ids: jax.Array  # [U + I, d] the ID branch (LightGCN) C
  content_users: jax.Array | None  # [U, d] the content branch M_u (AlignRec only)
  content_items: jax.Array | None  # [I, d] M_i (AlignRec; FREEDOM's h)
  num_users: int = dataclasses.field(metadata=dict(static=True))
  # [I, d] per modality: each modality's features projected (FREEDOM's auxiliary BPR term;
  # BM3's online views).
  modality_items: tuple[jax.Array, ...] = ()
  # BM3: [U + I, d] the representations before its predictor head (`ids` holds the head's
  # output, which scores), and each modality's projection before the head.
  targets: jax.Array | None = None
  modality_targets: tuple[jax.Array, ...] = ()

  def user_rows(self, users: jax.Array) -> jax.Array:
    """z_u for the given users: [B] -> [B, d]."""
    rows = self.ids[users]
    return rows if self.content_users is None else rows + self.content_users[users]

  def item_rows(self, items: jax.Array) -> jax.Array:
    """z_i for the given items: [B] -> [B, d]."""
    rows = self.ids[self.num_users + items]
    return rows if self.content_items is None else rows + self.content_items[items]

  def final(self) -> tuple[jax.Array, jax.Array]:
    """(z_users [U, d], z_items [I, d]) of every node, for scoring."""
    users, items = self.ids[: self.num_users], self.ids[self.num_users :]
    if self.content_users is not None:
      users = users + self.content_users
    if self.content_items is not None:
      items = items + self.content_items
    return users, items


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
  """B training triples; `mask` is 0 on the padding of the last partial batch."""

  users: jax.Array  # [B] int32
  pos_items: jax.Array  # [B] int32
  neg_items: jax.Array  # [B] int32
  mask: jax.Array  # [B] float32
  key: jax.Array | None = None  # the step's randomness for an objective that needs some (BM3)


@dataclasses.dataclass(frozen=True)
class FineTuning:
  """Whether the item features are fine-tuned."""

  trainable_features: bool = schema.field(
    True,
    "fine-tune the item features F as a parameter (the reference's behaviour); False keeps "
    "the file's F fixed",
    schema.BOOL,
  )


@dataclasses.dataclass(frozen=True)
class KnnGraph:
  """The item kNN graph's size."""

  knn_k: int = schema.field(
    10, "neighbours kept per item in the item kNN graph", schema.POSITIVE_INT
  )


@dataclasses.dataclass(frozen=True)
class EmbRegLoss:
  """The loss weight of MMRec's BPR-MF, VBPR and LightGCN."""

  reg_weight: float = schema.field(
    1e-4,
    "weight of MMRec's EmbLoss: the Frobenius norms (not squared) of the batch's layer-0 user, "
    "positive and negative rows, over the batch's real rows",
    schema.NONNEGATIVE,
  )


def emb_reg_objective(
  emb: Embeddings,
  features: jax.Array | None,
  batch: Batch,
  *,
  weights: EmbRegLoss,
  batch_size: int,
  in_batch_groups: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MMRec's BPR-MF, VBPR and LightGCN loss: BPRLoss (with its 1e-10) on the final rows plus
  reg_weight * EmbLoss, the Frobenius norms of the layer-0 rows (`emb.ego`) over B.

  For BPR-MF and VBPR the layer-0 rows are the final ones (no propagation).
  """
  del features, batch_size, in_batch_groups  # no content, no in-batch terms; EmbLoss divides by B
  zu = emb.user_rows(batch.users)
  zp = emb.item_rows(batch.pos_items)
  zn = emb.item_rows(batch.neg_items)
  bpr = losses.bpr(
    pos_scores=jnp.sum(zu * zp, -1), neg_scores=jnp.sum(zu * zn, -1), mask=batch.mask, eps=1e-10
  )
  reg = weights.reg_weight * losses.frobenius_norms(
    emb.ego[batch.users],
    emb.ego[emb.num_users + batch.pos_items],
    emb.ego[emb.num_users + batch.neg_items],
    mask=batch.mask,
  )
  return bpr + reg, {"bpr": bpr, "reg": reg}


def embed_dim_field(default: int = 64):
  return schema.field(default, "the embedding size d", schema.POSITIVE_INT)


def ui_layers_field(default: int):
  return schema.field(default, "LightGCN layers over the user-item graph", schema.NONNEGATIVE_INT)
