"""A stage-2 model from outside the package, for test_models.py: one file, registered by name,
is all a new model takes (no config file, no field list elsewhere)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignrec_jax import schema
from alignrec_jax.models import registry
from alignrec_jax.models.common import Batch, Embeddings, Graphs
from alignrec_jax.objectives import losses


class Toy(nn.Module):
  """Toy: one learned embedding per user and item, score z_u . z_i."""

  num_users: int
  num_items: int
  embed_dim: int = schema.field(8, "the embedding size", schema.POSITIVE_INT)

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array | None = None) -> Embeddings:
    del graphs, features
    shape = (self.num_users + self.num_items, self.embed_dim)
    table = self.param("embedding", nn.initializers.normal(0.1), shape)
    return Embeddings(
      ego=table, ids=table, content_users=None, content_items=None, num_users=self.num_users
    )


@dataclasses.dataclass(frozen=True)
class Loss:
  """Toy's loss weight."""

  reg_weight: float = schema.field(
    1e-3, "weight of the batch rows' squared norms", schema.NONNEGATIVE
  )


def objective(emb, features, batch: Batch, *, weights: Loss, batch_size, in_batch_groups):
  del features, in_batch_groups
  zu = emb.user_rows(batch.users)
  zp, zn = emb.item_rows(batch.pos_items), emb.item_rows(batch.neg_items)
  bpr = losses.bpr(
    pos_scores=jnp.sum(zu * zp, -1), neg_scores=jnp.sum(zu * zn, -1), mask=batch.mask
  )
  reg = weights.reg_weight * losses.half_squared_norms(
    zu, zp, zn, mask=batch.mask, denominator=batch_size
  )
  return bpr + reg, {"bpr": bpr, "reg": reg}


SPEC = registry.register(
  registry.ModelSpec(
    name="toy", module=Toy, loss=Loss, objective=objective, tables=(("embedding",),)
  )
)
