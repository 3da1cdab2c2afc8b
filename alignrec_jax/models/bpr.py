"""BPR-MF as MMRec runs it ("BPR"): one ID embedding per user and item, score z_u . z_i.

Rendle et al., UAI 2009. No graph: the ID-only baseline every graph model is measured against.
MMRec initialises both tables Xavier-normal, each over its own shape, and trains them with its
BPR loss and EmbLoss (`common.emb_reg_objective`).
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
)

xavier_normal = jax.nn.initializers.xavier_normal()


class MatrixFactorization(nn.Module):
  """BPR-MF: learned user and item ID embeddings, no graph, no content."""

  num_users: int
  num_items: int
  embed_dim: int = embed_dim_field()

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array | None = None) -> Embeddings:
    del graphs, features  # no graph, no content

    def init(key, shape, dtype=jnp.float32):
      user_key, item_key = jax.random.split(key)
      return jnp.concatenate(
        [
          xavier_normal(user_key, (self.num_users, shape[1]), dtype),
          xavier_normal(item_key, (self.num_items, shape[1]), dtype),
        ]
      )

    table = self.param("embedding", init, (self.num_users + self.num_items, self.embed_dim))
    return Embeddings(
      ego=table, ids=table, content_users=None, content_items=None, num_users=self.num_users
    )


SPEC = registry.register(
  registry.ModelSpec(
    name="bpr",
    module=MatrixFactorization,
    loss=EmbRegLoss,
    objective=emb_reg_objective,
    tables=(("embedding",),),
  )
)
