"""AlignRec's stage-2 recommender (its objective: objectives/stage2.py).

ID branch: LightGCN over the user-item graph, C = mean(X0, X1, X2).
Content branch: the item ID embedding gated by its content, M_i0 = E_i * sigmoid(gate(W F + b)),
propagated over the item kNN graph, M_i = S M_i0; users aggregate it, M_u = R_hat M_i.
Fusion: z = C + M; score(u, i) = z_u . z_i.

The item features F are an input: the training step passes either the trainable copy held in
the parameters (the reference fine-tunes F) or the frozen file features.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from alignrec_jax.models.common import Embeddings, Graphs, torch_linear_init
from alignrec_jax.models.lightgcn import IdEmbeddings
from alignrec_jax.propagation import propagate


def _torch_dense(features: int, fan_in: int, name: str) -> nn.Dense:
  init = torch_linear_init(fan_in)
  return nn.Dense(features, kernel_init=init, bias_init=init, name=name)


class AlignRec(nn.Module):
  """AlignRec stage 2 with reference defaults (embedding 64, two LightGCN layers, one kNN layer)."""

  num_users: int
  num_items: int
  embed_dim: int = 64
  num_ui_layers: int = 2
  num_knn_layers: int = 1

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
