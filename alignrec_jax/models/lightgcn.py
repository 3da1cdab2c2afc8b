"""LightGCN as MMRec runs it: the baseline behind the reference numbers and AlignRec's ID branch."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignrec_jax import losses
from alignrec_jax.models.common import Batch, Embeddings, Graphs, xavier_uniform
from alignrec_jax.propagation import lightgcn


class IdEmbeddings(nn.Module):
  """The user and item ID tables, Xavier-uniform, propagated by LightGCN."""

  num_users: int
  num_items: int
  embed_dim: int
  num_layers: int

  @nn.compact
  def __call__(self, graphs: Graphs) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (ego [U + I, d], propagated users [U, d], propagated items [I, d])."""
    users = self.param("user_embedding", xavier_uniform, (self.num_users, self.embed_dim))
    items = self.param("item_embedding", xavier_uniform, (self.num_items, self.embed_dim))
    ego = jnp.concatenate([users, items], axis=0)
    out = lightgcn(graphs.user_item, ego, num_layers=self.num_layers)
    return ego, out[: self.num_users], out[self.num_users :]


class LightGCN(nn.Module):
  """Score(u, i) = z_u . z_i with z the mean of the LightGCN layers (layer 0 included)."""

  num_users: int
  num_items: int
  embed_dim: int = 64
  num_ui_layers: int = 2

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array | None = None) -> Embeddings:
    del features  # LightGCN has no content branch.
    ego, users, items = IdEmbeddings(self.num_users, self.num_items, self.embed_dim,
                                     self.num_ui_layers, name="ids")(graphs)
    return Embeddings(users=users, items=items, ego_users=ego[: self.num_users],
                      ego_items=ego[self.num_users :], id_users=users, id_items=items)


def lightgcn_objective(emb: Embeddings, features: jax.Array | None, batch: Batch, *,
                       reg_weight: float, **unused) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MMRec's LightGCN loss: BPR (with its 1e-10) + reg_weight * Frobenius norms of ego rows / B."""
  del features, unused
  zu = emb.users[batch.users]
  zp = emb.items[batch.pos_items]
  zn = emb.items[batch.neg_items]
  bpr = losses.bpr(pos_scores=jnp.sum(zu * zp, -1), neg_scores=jnp.sum(zu * zn, -1),
                   mask=batch.mask, eps=1e-10)
  reg = reg_weight * losses.frobenius_norms(
      emb.ego_users[batch.users], emb.ego_items[batch.pos_items],
      emb.ego_items[batch.neg_items], mask=batch.mask)
  return bpr + reg, {"bpr": bpr, "reg": reg}
