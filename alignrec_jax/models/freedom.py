"""FREEDOM as MMRec runs it (Zhou and Shen, "A Tale of Two Graphs", MM 2023), its objective and
its item graph.

Two graphs: the item-item graph S, mixed from each modality's binary kNN graph and frozen at
set-up (`item_graph`), and the user-item graph, which training prunes afresh every epoch
(degree-sensitive edge dropout, `edge_dropout`: `sampling.degree_sensitive_edges`, set up by the
trainer); scoring uses the whole graph. Items: LightGCN over the user-item graph plus
h = S^L e_item (the item ID embeddings propagated over S); users: LightGCN. Each modality also
has a linear map to the embedding size, read by the objective's auxiliary BPR term (MMRec's
reg_weight). The defaults are the first value of each of MMRec's lists; MMRec trains it at lr
1e-3 without decay (`optim.lr_decay=1.0`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from alignrec_jax import graph as graph_lib
from alignrec_jax import schema
from alignrec_jax.errors import ConfigError
from alignrec_jax.models import registry
from alignrec_jax.models.common import (
  Batch,
  Embeddings,
  FineTuning,
  Graphs,
  KnnGraph,
  embed_dim_field,
  project_modalities,
  ui_layers_field,
)
from alignrec_jax.models.lightgcn import ID_TABLE, IdEmbeddings
from alignrec_jax.objectives import losses
from alignrec_jax.propagation import propagate


class FREEDOM(nn.Module):
  """FREEDOM: LightGCN plus item IDs over a frozen, mixed item kNN graph; a pruned user graph.

  Attributes:
    feature_dims: each modality's width in the feature matrix, in order (the data's, not a
      config field): the columns each modality's projection reads.
  """

  num_users: int
  num_items: int
  feature_dims: tuple[int, ...]
  embed_dim: int = embed_dim_field()
  num_ui_layers: int = ui_layers_field(2)
  num_mm_layers: int = schema.field(
    1, "propagations of the item IDs over the item-item graph", schema.NONNEGATIVE_INT
  )

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array) -> Embeddings:
    ego, ids = IdEmbeddings(
      self.num_users, self.num_items, self.embed_dim, self.num_ui_layers, name="ids"
    )(graphs)
    h = ego[self.num_users :]
    for _ in range(self.num_mm_layers):
      h = propagate(graphs.item_knn, h)
    projected = project_modalities(features, self.feature_dims, self.embed_dim)
    return Embeddings(
      ego=ego,
      ids=ids,
      content_users=None,
      content_items=h,
      num_users=self.num_users,
      modality_items=tuple(projected),
    )


@dataclasses.dataclass(frozen=True)
class Options(KnnGraph, FineTuning):
  """FREEDOM's set-up: its item graph, the pruning of the user-item graph, fine-tuning."""

  image_weight: float = schema.field(
    0.1,
    "weight of the first feature file's kNN graph (MMRec's image slot) in the mixed item graph",
    schema.FRACTION,
  )
  edge_dropout: float = schema.field(
    0.8,
    "fraction of the training edges dropped from the user-item graph, drawn afresh every epoch",
    schema.DROPOUT,
  )


@dataclasses.dataclass(frozen=True)
class Loss:
  """FREEDOM's loss weight."""

  reg_weight: float = schema.field(
    0.0,
    "MMRec's name for the weight of the auxiliary BPR terms, one per modality, that score each "
    "user against the items' projected features",
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
  """MMRec's FREEDOM loss: BPR (-logsigmoid) on z, plus reg_weight x the modalities' BPR terms."""
  del features, batch_size, in_batch_groups
  zu = emb.user_rows(batch.users)
  pos, neg, mask = batch.pos_items, batch.neg_items, batch.mask

  def bpr(items: Callable[[jax.Array], jax.Array]) -> jax.Array:
    return losses.bpr(
      pos_scores=jnp.sum(zu * items(pos), -1), neg_scores=jnp.sum(zu * items(neg), -1), mask=mask
    )

  terms = {"bpr": bpr(emb.item_rows)}
  # A Python-level switch, so that with weight 0 (MMRec's first value) the projections are
  # dead code that XLA removes rather than a product with zero.
  if weights.reg_weight:
    terms["modality_bpr"] = weights.reg_weight * sum(
      bpr(lambda items, table=table: table[items]) for table in emb.modality_items
    )
  return sum(terms.values()), terms


def item_graph(
  group, modalities, features, search: graph_lib.KnnSearch = graph_lib.EXACT_SEARCH
) -> jraph.GraphsTuple:
  """FREEDOM's frozen S: each modality's binary kNN graph, the first weighted image_weight."""
  del features
  if len(modalities) > 2:
    raise ConfigError(
      f"config.model.freedom: FREEDOM mixes one or two modalities (image, text), got "
      f"{len(modalities)} feature files"
    )
  weights = [group.image_weight, 1.0 - group.image_weight][: len(modalities)]
  if len(modalities) == 1:
    weights = [1.0]
  return graph_lib.mixed_knn_graph(list(modalities), weights, k=group.knn_k, search=search)


SPEC = registry.register(
  registry.ModelSpec(
    name="freedom",
    module=FREEDOM,
    loss=Loss,
    objective=objective,
    options=Options,
    item_graph=item_graph,
    content_in_scores=True,
    content_in_loss=True,
    tables=(ID_TABLE,),
  )
)
