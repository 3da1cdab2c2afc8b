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
modalities this is MMRec's code line for line; more generalise it as written.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignrec_jax.models.common import Embeddings, Graphs, project_modalities, torch_linear_init
from alignrec_jax.models.lightgcn import IdEmbeddings
from alignrec_jax.propagation import propagate


def _dense(features: int, fan_in: int, name: str, *, use_bias: bool = True) -> nn.Dense:
  init = torch_linear_init(fan_in)  # PyTorch's nn.Linear default, as MMRec leaves it
  return nn.Dense(features, use_bias=use_bias, kernel_init=init, bias_init=init, name=name)


class MGCN(nn.Module):
  """MGCN over M modalities; MMRec's defaults (64-d, 2 user-item layers, 1 item-item layer).

  Attributes:
    feature_dims: each modality's width in the feature matrix, in order (the data's).
  """

  num_users: int
  num_items: int
  feature_dims: tuple[int, ...]
  embed_dim: int = 64
  num_ui_layers: int = 2
  num_mm_layers: int = 1

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
