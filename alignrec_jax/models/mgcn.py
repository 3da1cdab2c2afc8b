"""MGCN as MMRec runs it (Yu et al., "Multi-View Graph Convolutional Network for Multimedia
Recommendation", MM 2023).

Picked over LGMRec for the comparison: its graphs are the ones this codebase already builds
(each modality's weighted, normalised cosine kNN graph, frozen at set-up like AlignRec's, and
R_hat, the user rows of the normalised user-item graph), so it runs on the same sparse kernels
with nothing learnt over I x I; LGMRec adds a learnt hypergraph with Gumbel-softmax
assignments, a third propagation scheme to verify.

Three views. The user-item view: LightGCN over the user-item graph (C, layer mean). The
item-item view, per modality m: the item ID embeddings gated by the modality ("behaviour-guided
purifier", e_i * sigmoid(W_m f_im + b)), propagated over the modality's kNN graph, and users as
R_hat of that. The fuser: attention weights over the modalities give a common part; each
modality's remainder is gated by a user- or item-specific preference from C; the side view S
is (sum of gated remainders + common) / (M + 1). Score(u, i) = (C + S)_u . (C + S)_i. With two
modalities this is MMRec's code line for line; more generalise it as written. The defaults are
the first value of each of MMRec's lists (cl_weight is its cl_loss); MMRec's MGCN keeps the
per-epoch learning-rate decay (0.96 every 50 epochs, as the optim group does).
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
  project_modalities,
  torch_linear_init,
  ui_layers_field,
)
from alignrec_jax.models.lightgcn import ID_TABLE, IdEmbeddings
from alignrec_jax.objectives import losses
from alignrec_jax.propagation import propagate


def _dense(features: int, fan_in: int, name: str, *, use_bias: bool = True) -> nn.Dense:
  init = torch_linear_init(fan_in)  # PyTorch's nn.Linear default, as MMRec leaves it
  return nn.Dense(features, use_bias=use_bias, kernel_init=init, bias_init=init, name=name)


class MGCN(nn.Module):
  """MGCN: LightGCN IDs fused with each modality's purified item-item view by attention.

  Attributes:
    feature_dims: each modality's width in the feature matrix, in order (the data's).
  """

  num_users: int
  num_items: int
  feature_dims: tuple[int, ...]
  embed_dim: int = embed_dim_field()
  num_ui_layers: int = ui_layers_field(2)
  num_mm_layers: int = schema.field(
    1, "propagations over each modality's item kNN graph", schema.NONNEGATIVE_INT
  )

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array) -> Embeddings:
    d, num_users, num_items = self.embed_dim, self.num_users, self.num_items
    ego, content = IdEmbeddings(num_users, num_items, d, self.num_ui_layers, name="ids")(graphs)
    item_ids = ego[num_users:]
    purified = [
      item_ids * nn.sigmoid(_dense(d, d, f"purifier_{m}")(projected))
      for m, projected in enumerate(project_modalities(features, self.feature_dims, d))
    ]
    # The modalities' kNN graphs are one block-diagonal graph over M x I nodes: one pass.
    items = jnp.concatenate(purified)
    for _ in range(self.num_mm_layers):
      items = propagate(graphs.item_knn, items)
    views = []
    for m in range(len(self.feature_dims)):
      modality_items = items[m * num_items : (m + 1) * num_items]
      modality_users = propagate(graphs.user_item_block, modality_items)
      views.append(jnp.concatenate([modality_users, modality_items]))
    query = nn.Sequential(
      [_dense(d, d, "query_hidden"), jnp.tanh, _dense(1, d, "query_out", use_bias=False)],
      name="query_common",
    )
    attention = jax.nn.softmax(jnp.concatenate([query(v) for v in views], axis=-1), axis=-1)
    common = sum(attention[:, m : m + 1] * v for m, v in enumerate(views))
    side = common
    for m, v in enumerate(views):
      prefer = nn.sigmoid(_dense(d, d, f"prefer_{m}")(content))
      side = side + prefer * (v - common)
    side = side / (len(views) + 1)
    return Embeddings(
      ego=ego,
      ids=content,
      content_users=side[:num_users],
      content_items=side[num_users:],
      num_users=num_users,
    )


@dataclasses.dataclass(frozen=True)
class Loss:
  """MGCN's loss weights."""

  reg_weight: float = schema.field(
    1e-4,
    "the L2 term, 0.5 (|z_u|^2 + |z_pos|^2 + |z_neg|^2) summed over the batch, over the "
    "configured batch size (the final rows, as MMRec's MGCN computes it)",
    schema.NONNEGATIVE,
  )
  cl_weight: float = schema.field(
    0.001,
    "MMRec's cl_loss: the two InfoNCE terms between the side view and the user-item view "
    "(positive items, then users)",
    schema.NONNEGATIVE,
  )
  temperature: float = schema.field(0.2, "their temperature (MMRec's fixed 0.2)", schema.POSITIVE)


def objective(
  emb: Embeddings,
  features: jax.Array,
  batch: Batch,
  *,
  weights: Loss,
  batch_size: int,
  in_batch_groups: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MMRec's MGCN loss: BPR (-logsigmoid) and L2 on the final rows, plus cl_weight times
  InfoNCE(side, user-item view) over the batch's positive items and its users (within
  `in_batch_groups` slices of the batch, as AlignRec's)."""
  del features
  users, pos, neg, mask = batch.users, batch.pos_items, batch.neg_items, batch.mask
  zu, zp, zn = emb.user_rows(users), emb.item_rows(pos), emb.item_rows(neg)
  num_users = emb.num_users

  def info_nce(side: jax.Array, content: jax.Array) -> jax.Array:
    return losses.in_groups(
      lambda a, p, m: losses.info_nce(
        anchors=a, positives=p, temperature=weights.temperature, mask=m
      ),
      in_batch_groups,
      mask,
      side,
      content,
    )

  terms = {
    "bpr": losses.bpr(pos_scores=jnp.sum(zu * zp, -1), neg_scores=jnp.sum(zu * zn, -1), mask=mask),
    "l2": weights.reg_weight
    * losses.half_squared_norms(zu, zp, zn, mask=mask, denominator=batch_size),
    "cl": weights.cl_weight
    * (
      info_nce(emb.content_items[pos], emb.ids[num_users + pos])
      + info_nce(emb.content_users[users], emb.ids[users])
    ),
  }
  return sum(terms.values()), terms


def item_graph(
  group, modalities, features, search: graph_lib.KnnSearch = graph_lib.EXACT_SEARCH
) -> jraph.GraphsTuple:
  """MGCN's frozen item graphs: each modality's weighted cosine kNN graph (self included),
  normalised as AlignRec's, side by side as one block-diagonal graph over M x I nodes."""
  del features
  return graph_lib.block_diagonal(
    [graph_lib.knn_graph(m, k=group.knn_k, include_self=True, search=search) for m in modalities]
  )


@dataclasses.dataclass(frozen=True)
class Options(KnnGraph, FineTuning):
  """MGCN's set-up: its modalities' kNN graphs, and whether F is fine-tuned."""


SPEC = registry.register(
  registry.ModelSpec(
    name="mgcn",
    module=MGCN,
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
