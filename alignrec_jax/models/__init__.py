"""Stage-2 recommenders: each a Flax module plus the objective it is trained with."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import ml_collections

from alignrec_jax.models.alignrec import AlignRec, alignrec_objective
from alignrec_jax.models.common import Batch, Embeddings, Graphs
from alignrec_jax.models.lightgcn import LightGCN, lightgcn_objective

__all__ = ["AlignRec", "Batch", "Embeddings", "Graphs", "LightGCN", "build", "uses_content"]

_MODELS = {
    "alignrec": (AlignRec, alignrec_objective),
    "lightgcn": (LightGCN, lightgcn_objective),
}


def uses_content(name: str) -> bool:
  """Whether the model reads item features (and so needs the kNN graph)."""
  return name == "alignrec"


def build(config: ml_collections.ConfigDict, *, num_users: int,
          num_items: int) -> tuple[nn.Module, Callable]:
  """(module, objective) for `config.name`; the objective takes the config's loss weights."""
  if config.name not in _MODELS:
    raise ValueError(f"unknown model {config.name!r}; expected one of {sorted(_MODELS)}")
  module_cls, objective = _MODELS[config.name]
  kwargs = dict(num_users=num_users, num_items=num_items, embed_dim=config.embed_dim,
                num_ui_layers=config.num_ui_layers)
  if config.name == "alignrec":
    kwargs["num_knn_layers"] = config.num_knn_layers
  return module_cls(**kwargs), objective
