"""VBPR as MMRec runs it: the item is its ID embedding beside a projection of its content.

He and McAuley, AAAI 2016. z_i = [e_i, W f_i + b] (2d), z_u a free 2d vector, score z_u . z_i;
the content f_i is the raw feature row, fixed (never fine-tuned; MMRec feeds the raw,
unnormalised concatenation: `data.normalize_features=False`). MMRec's initialisation: the user
and item ID tables Xavier-uniform, W Xavier-normal, b zero; its BPR loss and EmbLoss
(`common.emb_reg_objective`).
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
  xavier_uniform,
)


class VBPR(nn.Module):
  """VBPR: an item's ID embedding beside a linear projection of its features."""

  num_users: int
  num_items: int
  embed_dim: int = embed_dim_field()

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array) -> Embeddings:
    """`features`: [I, D] item content. Users [U, 2d]; items [I, 2d] = [ID, projection]."""
    del graphs  # no graph
    users = self.param("user_embedding", xavier_uniform, (self.num_users, 2 * self.embed_dim))
    items = self.param("item_embedding", xavier_uniform, (self.num_items, self.embed_dim))
    projected = nn.Dense(
      self.embed_dim,
      kernel_init=jax.nn.initializers.xavier_normal(),
      bias_init=nn.initializers.zeros,
      name="feature_proj",
    )(features)
    # The whole item row (ID part and content part) is what the regulariser reads: MMRec's
    # VBPR regularises the final rows, so they stand as the "layer-0" table here.
    table = jnp.concatenate([users, jnp.concatenate([items, projected], axis=-1)])
    return Embeddings(
      ego=table, ids=table, content_users=None, content_items=None, num_users=self.num_users
    )


SPEC = registry.register(
  registry.ModelSpec(
    name="vbpr",
    module=VBPR,
    loss=EmbRegLoss,
    objective=emb_reg_objective,
    content_in_scores=True,
    tables=(("user_embedding",), ("item_embedding",)),
  )
)
