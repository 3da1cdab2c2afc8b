"""LightGCN as MMRec runs it: the baseline behind the reference numbers and AlignRec's ID branch.

Score(u, i) = z_u . z_i with z the mean of the LightGCN layers over the user-item graph (layer 0
included); MMRec's BPR loss with its EmbLoss on the layer-0 rows (`common.emb_reg_objective`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignrec_jax.models import registry
from alignrec_jax.models.common import (
  Embeddings,
  EmbRegLoss,
  Graphs,
  emb_reg_objective,
  embed_dim_field,
  ui_layers_field,
  xavier_uniform,
)
from alignrec_jax.propagation import lightgcn


class IdEmbeddings(nn.Module):
  """One [U + I, d] table of user then item ID embeddings, propagated by LightGCN.

  Each part is Xavier-uniform over its own shape, as the reference's two tables are; one table
  spares the step a concatenation forward and two pads backward.
  """

  num_users: int
  num_items: int
  embed_dim: int
  num_layers: int

  @nn.compact
  def __call__(self, graphs: Graphs) -> tuple[jax.Array, jax.Array]:
    """Returns (ego E [U + I, d], LightGCN layer mean C [U + I, d])."""

    def init(key, shape, dtype=jnp.float32):
      user_key, item_key = jax.random.split(key)
      return jnp.concatenate(
        [
          xavier_uniform(user_key, (self.num_users, shape[1]), dtype),
          xavier_uniform(item_key, (self.num_items, shape[1]), dtype),
        ]
      )

    ego = self.param("embedding", init, (self.num_users + self.num_items, self.embed_dim))
    return ego, lightgcn(graphs.user_item, ego, num_layers=self.num_layers)


# The parameter path of IdEmbeddings' table in every model that names it "ids".
ID_TABLE = ("ids", "embedding")


class LightGCN(nn.Module):
  """LightGCN: ID embeddings propagated over the user-item graph, no content."""

  num_users: int
  num_items: int
  embed_dim: int = embed_dim_field()
  num_ui_layers: int = ui_layers_field(2)

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array | None = None) -> Embeddings:
    del features  # LightGCN has no content branch.
    ego, ids = IdEmbeddings(
      self.num_users, self.num_items, self.embed_dim, self.num_ui_layers, name="ids"
    )(graphs)
    return Embeddings(
      ego=ego, ids=ids, content_users=None, content_items=None, num_users=self.num_users
    )


SPEC = registry.register(
  registry.ModelSpec(
    name="lightgcn",
    module=LightGCN,
    loss=EmbRegLoss,
    objective=emb_reg_objective,
    tables=(ID_TABLE,),
  )
)
