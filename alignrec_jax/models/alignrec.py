"""AlignRec's stage-2 recommender and its objective (../shared/docs/ALIGNREC.md).

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
import jax.numpy as jnp

from alignrec_jax import losses
from alignrec_jax.models.common import Batch, Embeddings, Graphs, torch_linear_init
from alignrec_jax.models.lightgcn import IdEmbeddings
from alignrec_jax.propagation import matmul


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
    ego, ids = IdEmbeddings(self.num_users, self.num_items, self.embed_dim, self.num_ui_layers,
                            name="ids")(graphs)
    ego_items = ego[self.num_users :]
    projected = _torch_dense(self.embed_dim, features.shape[-1], "feature_proj")(features)
    gate = nn.sigmoid(_torch_dense(self.embed_dim, self.embed_dim, "content_gate")(projected))
    content_items = ego_items * gate
    for _ in range(self.num_knn_layers):
      content_items = matmul(graphs.item_knn, content_items)
    content_users = matmul(graphs.user_item_block, content_items)
    return Embeddings(ego=ego, ids=ids, content_users=content_users,
                      content_items=content_items, num_users=self.num_users)


def alignrec_objective(emb: Embeddings, features: jax.Array, batch: Batch, *,
                       batch_size: int, reg_weight: float, uia_weight: float, cl_weight: float,
                       sim_weight: float, temperature: float,
                       **unused) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The five terms of AlignRec's stage-2 loss on one batch, as the reference computes them.

  Args:
    emb: the model's output.
    features: [I, D] the current item features F (the similarity target is their cosine).
    batch: B (user, positive, negative) triples with a padding mask.
    batch_size: the configured batch size; the L2 term divides by it even for a short batch.
    reg_weight, uia_weight, cl_weight, sim_weight: term weights.
    temperature: InfoNCE temperature tau.

  Returns:
    (total loss, {term name: weighted value}).
  """
  del unused
  u, pos, neg, mask = batch
  zu, zp, zn = emb.user_rows(u), emb.item_rows(pos), emb.item_rows(neg)
  terms = {
      "bpr": losses.bpr(pos_scores=jnp.sum(zu * zp, -1), neg_scores=jnp.sum(zu * zn, -1),
                        mask=mask),
      "l2": reg_weight * losses.half_squared_norms(zu, zp, zn, mask=mask,
                                                   denominator=batch_size),
      "uia": uia_weight * losses.cosine_alignment(users=zu, items=zp, mask=mask),
      "cca": cl_weight * (
          losses.info_nce(anchors=emb.content_items[pos], positives=emb.ids[emb.num_users + pos],
                          temperature=temperature, mask=mask)
          + losses.info_nce(anchors=emb.content_users[u], positives=emb.ids[u],
                            temperature=temperature, mask=mask)),
      "sim": sim_weight * losses.similarity_preservation(
          embeddings=emb.content_items[pos], features=features[pos], mask=mask),
  }
  return sum(terms.values()), terms
