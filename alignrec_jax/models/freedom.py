"""FREEDOM as MMRec runs it (Zhou and Shen, "A Tale of Two Graphs", MM 2023).

Two graphs: the item-item graph S, mixed from each modality's binary kNN graph and frozen at
set-up (`graph.mixed_knn_graph`), and the user-item graph, which training prunes afresh every
epoch (degree-sensitive edge dropout: `sampling.degree_sensitive_edges`, set up by the trainer);
scoring uses the whole graph. Items: LightGCN over the user-item graph plus h = S^L e_item (the
item ID embeddings propagated over S); users: LightGCN. Each modality also has a linear map to
the embedding size, read by the objective's auxiliary BPR term (MMRec's reg_weight).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from alignrec_jax.models.common import Embeddings, Graphs, project_modalities
from alignrec_jax.models.lightgcn import IdEmbeddings
from alignrec_jax.propagation import propagate


class FREEDOM(nn.Module):
  """Score(u, i) = z_u . z_i, z_i = LightGCN_i + S^L e_i; MMRec's defaults.

  Attributes:
    feature_dims: each modality's width in the feature matrix, in order (the data's, not a
      config field): the columns each modality's projection reads.
  """

  num_users: int
  num_items: int
  feature_dims: tuple[int, ...]
  embed_dim: int = 64
  num_ui_layers: int = 2
  num_mm_layers: int = 1

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
