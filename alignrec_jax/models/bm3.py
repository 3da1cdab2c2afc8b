"""BM3 as MMRec runs it (Zhou et al., "Bootstrap Latent Representations for Multi-modal
Recommendation", WWW 2023): no negatives, a predictor head and dropout views as targets.

Users: LightGCN over the user-item graph; items: LightGCN plus the item's own ID embedding.
These are the targets (the objective drops some entries out and stops their gradient); a shared
linear predictor maps users, items and each modality's projected features to the online views,
and the online views score: z_u . z_i with z = predictor(.). MMRec's initialisation: the ID tables
Xavier-uniform, the predictor's and projections' weights Xavier-normal, their biases PyTorch's
default.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from alignrec_jax.models.common import Embeddings, Graphs, torch_linear_init
from alignrec_jax.models.lightgcn import IdEmbeddings

xavier_normal = jax.nn.initializers.xavier_normal()


class BM3(nn.Module):
  """BM3 with MMRec's first settings (one LightGCN layer, embedding 64).

  Attributes:
    feature_dims: each modality's width in the feature matrix, in order (the data's).
  """

  num_users: int
  num_items: int
  feature_dims: tuple[int, ...]
  embed_dim: int = 64
  num_ui_layers: int = 1

  @nn.compact
  def __call__(self, graphs: Graphs, features: jax.Array) -> Embeddings:
    ego, ids = IdEmbeddings(
      self.num_users, self.num_items, self.embed_dim, self.num_ui_layers, name="ids"
    )(graphs)
    targets = ids.at[self.num_users :].add(ego[self.num_users :])
    predictor = nn.Dense(
      self.embed_dim,
      kernel_init=xavier_normal,
      bias_init=torch_linear_init(self.embed_dim),
      name="predictor",
    )
    modality_targets, start = [], 0
    for index, width in enumerate(self.feature_dims):
      dense = nn.Dense(
        self.embed_dim,
        kernel_init=xavier_normal,
        bias_init=torch_linear_init(width),
        name=f"modality_{index}",
      )
      modality_targets.append(dense(features[:, start : start + width]))
      start += width
    return Embeddings(
      ego=ego,
      ids=predictor(targets),
      content_users=None,
      content_items=None,
      num_users=self.num_users,
      modality_items=tuple(predictor(t) for t in modality_targets),
      targets=targets,
      modality_targets=tuple(modality_targets),
    )
