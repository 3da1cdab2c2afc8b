"""BM3 as MMRec runs it (Zhou et al., "Bootstrap Latent Representations for Multi-modal
Recommendation", WWW 2023): no negatives, a predictor head and dropout views as targets.

Users: LightGCN over the user-item graph; items: LightGCN plus the item's own ID embedding.
These are the targets (the objective drops some entries out and stops their gradient); a shared
linear predictor maps users, items and each modality's projected features to the online views,
and the online views of the IDs score: z_u . z_i with z = predictor(.). The content enters the
loss only, never the scores. MMRec's initialisation: the ID tables Xavier-uniform, the
predictor's and projections' weights Xavier-normal, their biases PyTorch's default. The
defaults are the first value of each of MMRec's lists; MMRec trains it at lr 1e-3 without decay
(`optim.lr_decay=1.0`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignrec_jax import schema
from alignrec_jax.models import registry
from alignrec_jax.models.common import (
  Batch,
  Embeddings,
  FineTuning,
  Graphs,
  embed_dim_field,
  torch_linear_init,
  ui_layers_field,
)
from alignrec_jax.models.lightgcn import ID_TABLE, IdEmbeddings
from alignrec_jax.objectives import losses

xavier_normal = jax.nn.initializers.xavier_normal()


class BM3(nn.Module):
  """BM3: a predictor head over LightGCN IDs, trained against dropped-out targets.

  Attributes:
    feature_dims: each modality's width in the feature matrix, in order (the data's).
  """

  num_users: int
  num_items: int
  feature_dims: tuple[int, ...]
  embed_dim: int = embed_dim_field()
  num_ui_layers: int = ui_layers_field(1)

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array) -> Embeddings:
    ego, ids = IdEmbeddings(
      self.num_users, self.num_items, self.embed_dim, self.num_ui_layers, name="ids"
    )(graphs)
    targets = ids.at[self.num_users :].add(ego[self.num_users :])
    predictor = nn.Dense(
      self.embed_dim,
      kernel_init=xavier_normal,
      bias_init=torch_linear_init(self.embed_dim),
      name="predictor",
    )
    modality_targets, start = [], 0
    for index, width in enumerate(self.feature_dims):
      dense = nn.Dense(
        self.embed_dim,
        kernel_init=xavier_normal,
        bias_init=torch_linear_init(width),
        name=f"modality_{index}",
      )
      modality_targets.append(dense(features[:, start : start + width]))
      start += width
    return Embeddings(
      ego=ego,
      ids=predictor(targets),
      content_users=None,
      content_items=None,
      num_users=self.num_users,
      modality_items=tuple(predictor(t) for t in modality_targets),
      targets=targets,
      modality_targets=tuple(modality_targets),
    )


@dataclasses.dataclass(frozen=True)
class Loss:
  """BM3's loss weights."""

  dropout: float = schema.field(
    0.3,
    "the fraction of the targets' entries dropped out (scaled as torch's F.dropout)",
    schema.DROPOUT,
  )
  reg_weight: float = schema.field(
    0.1,
    "weight of MMRec's EmbLoss over the whole target tables, (|users|_F + |items|_F) / I",
    schema.NONNEGATIVE,
  )
  cl_weight: float = schema.field(
    2.0,
    "weight of the modality terms: each modality's online view against the item's target and "
    "against its own dropped-out projection",
    schema.NONNEGATIVE,
  )


def objective(
  emb: Embeddings,
  features: jax.Array,
  batch: Batch,
  *,
  weights: Loss,
  batch_size: int,
  in_batch_groups: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MMRec's BM3 loss on the batch's (user, positive) pairs (no negatives): 1 - cosine between
  each online view and a dropped-out, gradient-stopped target."""
  del features, batch_size, in_batch_groups
  users, items, mask = batch.users, batch.pos_items, batch.mask
  user_key, item_key, *modality_keys = jax.random.split(batch.key, 2 + len(emb.modality_items))

  def target(key: jax.Array, rows: jax.Array) -> jax.Array:
    rows = jax.lax.stop_gradient(rows)
    keep = jax.random.bernoulli(key, 1.0 - weights.dropout, rows.shape)
    return jnp.where(keep, rows / (1.0 - weights.dropout), 0.0)

  num_users = emb.num_users
  user_target = target(user_key, emb.targets[users])
  item_target = target(item_key, emb.targets[num_users + items])
  terms = {
    "ui": losses.cosine_alignment(users=emb.ids[users], items=item_target, mask=mask)
    + losses.cosine_alignment(users=emb.ids[num_users + items], items=user_target, mask=mask),
    "reg": weights.reg_weight
    * (jnp.linalg.norm(emb.targets[:num_users]) + jnp.linalg.norm(emb.targets[num_users:]))
    / (emb.targets.shape[0] - num_users),
  }
  if emb.modality_items:
    modality = 0.0
    for key, online, own in zip(
      modality_keys, emb.modality_items, emb.modality_targets, strict=True
    ):
      modality += losses.cosine_alignment(users=online[items], items=item_target, mask=mask)
      modality += losses.cosine_alignment(
        users=online[items], items=target(key, own[items]), mask=mask
      )
    terms["modality"] = weights.cl_weight * modality
  return sum(terms.values()), terms


SPEC = registry.register(
  registry.ModelSpec(
    name="bm3",
    module=BM3,
    loss=Loss,
    objective=objective,
    options=FineTuning,
    content_in_loss=True,
    tables=(ID_TABLE,),
  )
)
