"""AlignRec's stage-2 recommender, its objective and its item graph.

ID branch: LightGCN over the user-item graph, C = mean(X0, X1, X2).
Content branch: the item ID embedding gated by its content, M_i0 = E_i * sigmoid(gate(W F + b)),
propagated over the item kNN graph, M_i = S M_i0; users aggregate it, M_u = R_hat M_i.
Fusion: z = C + M; score(u, i) = z_u . z_i.

The item features F are an input: the training step passes either the trainable copy held in
the parameters (the reference fine-tunes F) or the frozen file features.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from alignrec_jax import graph as graph_lib
from alignrec_jax import schema
from alignrec_jax.models import registry
from alignrec_jax.models.common import (
  Batch,
  Embeddings,
  FineTuning,
  Graphs,
  KnnGraph,
  embed_dim_field,
  torch_linear_init,
  ui_layers_field,
)
from alignrec_jax.models.lightgcn import ID_TABLE, IdEmbeddings
from alignrec_jax.objectives import losses
from alignrec_jax.propagation import propagate


def _torch_dense(features: int, fan_in: int, name: str) -> nn.Dense:
  init = torch_linear_init(fan_in)
  return nn.Dense(features, kernel_init=init, bias_init=init, name=name)


class AlignRec(nn.Module):
  """AlignRec: LightGCN IDs plus content-gated IDs over the item kNN graph (the paper's)."""

  num_users: int
  num_items: int
  embed_dim: int = embed_dim_field()
  num_ui_layers: int = ui_layers_field(2)
  num_knn_layers: int = schema.field(
    1, "propagations of the content branch over the item kNN graph", schema.NONNEGATIVE_INT
  )

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array) -> Embeddings:
    """All users' and items' representations.

    Args:
      graphs: user_item (A_hat), user_item_block (R_hat) and item_knn (S) operators.
      features: [I, D] item multimodal features F.
    """
    ego, ids = IdEmbeddings(
      self.num_users, self.num_items, self.embed_dim, self.num_ui_layers, name="ids"
    )(graphs)
    ego_items = ego[self.num_users :]
    projected = _torch_dense(self.embed_dim, features.shape[-1], "feature_proj")(features)
    gate = nn.sigmoid(_torch_dense(self.embed_dim, self.embed_dim, "content_gate")(projected))
    content_items = ego_items * gate
    for _ in range(self.num_knn_layers):
      content_items = propagate(graphs.item_knn, content_items)
    content_users = propagate(graphs.user_item_block, content_items)
    return Embeddings(
      ego=ego,
      ids=ids,
      content_users=content_users,
      content_items=content_items,
      num_users=self.num_users,
    )


@dataclasses.dataclass(frozen=True)
class Options(KnnGraph, FineTuning):
  """AlignRec's set-up: its kNN graph, and whether F is fine-tuned."""

  knn_include_self: bool = schema.field(
    True, "each item is its own first neighbour in the kNN graph (the reference's)", schema.BOOL
  )


@dataclasses.dataclass(frozen=True)
class Loss:
  """AlignRec's stage-2 loss weights (the reference's defaults)."""

  l2_weight: float = schema.field(
    1e-4,
    "the L2 term, 0.5 (|z_u|^2 + |z_pos|^2 + |z_neg|^2) summed over the batch, over the "
    "configured batch size",
    schema.NONNEGATIVE,
  )
  uia_weight: float = schema.field(
    0.1, "user-item alignment, 1 - mean cos(z_u, z_pos)", schema.NONNEGATIVE
  )
  cl_weight: float = schema.field(
    0.01, "content-category alignment: the two InfoNCE terms (items and users)", schema.NONNEGATIVE
  )
  sim_weight: float = schema.field(
    0.1, "similarity preservation, ||M_i M_i^T - cos(F)||_F / B", schema.NONNEGATIVE
  )
  temperature: float = schema.field(0.2, "the InfoNCE temperature tau", schema.POSITIVE)


def objective(
  emb: Embeddings,
  features: jax.Array,
  batch: Batch,
  *,
  weights: Loss,
  batch_size: int,
  in_batch_groups: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The five terms of AlignRec's stage-2 loss on one batch, as the reference computes them.

  Args:
    emb: the model's output.
    features: [I, D] the current item features F (the similarity target is their cosine).
    batch: B (user, positive, negative) triples with a padding mask.
    weights: the term weights and the temperature.
    batch_size: the configured batch size; the L2 term divides by it even for a short batch.
    in_batch_groups: the in-batch terms (InfoNCE, similarity) within this many equal slices
      of the batch (`losses.in_groups`); 1: the whole batch.

  Returns:
    (total loss, {term name: weighted value}).
  """
  u, pos, neg, mask = batch.users, batch.pos_items, batch.neg_items, batch.mask
  zu, zp, zn = emb.user_rows(u), emb.item_rows(pos), emb.item_rows(neg)
  tau = weights.temperature

  def info_nce(anchors: jax.Array, positives: jax.Array) -> jax.Array:
    return losses.in_groups(
      lambda a, p, m: losses.info_nce(anchors=a, positives=p, temperature=tau, mask=m),
      in_batch_groups,
      mask,
      anchors,
      positives,
    )

  similarity = losses.in_groups(
    lambda e, f, m: losses.similarity_preservation(embeddings=e, features=f, mask=m),
    in_batch_groups,
    mask,
    emb.content_items[pos],
    features[pos],
  )
  terms = {
    "bpr": losses.bpr(pos_scores=jnp.sum(zu * zp, -1), neg_scores=jnp.sum(zu * zn, -1), mask=mask),
    "l2": weights.l2_weight
    * losses.half_squared_norms(zu, zp, zn, mask=mask, denominator=batch_size),
    "uia": weights.uia_weight * losses.cosine_alignment(users=zu, items=zp, mask=mask),
    "cca": weights.cl_weight
    * (
      info_nce(emb.content_items[pos], emb.ids[emb.num_users + pos])
      + info_nce(emb.content_users[u], emb.ids[u])
    ),
    "sim": weights.sim_weight * similarity,
  }
  return sum(terms.values()), terms


def item_graph(
  group, modalities, features, search: graph_lib.KnnSearch = graph_lib.EXACT_SEARCH
) -> jraph.GraphsTuple:
  """AlignRec's S: the cosine kNN graph of F (all modalities combined), weighted, normalised."""
  del modalities
  return graph_lib.knn_graph(
    features, k=group.knn_k, include_self=group.knn_include_self, search=search
  )


SPEC = registry.register(
  registry.ModelSpec(
    name="alignrec",
    module=AlignRec,
    loss=Loss,
    objective=objective,
    options=Options,
    item_graph=item_graph,
    content_in_scores=True,
    content_in_loss=True,
    in_batch_terms=True,
    tables=(ID_TABLE,),
  )
)
