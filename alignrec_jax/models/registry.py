"""The stage-2 models by name: each model's file declares its `ModelSpec` and calls `register`.

A model's config group, `config.model.<name>`, is generated from its spec: the Flax module's
fields (all but the data's sizes), the set-up options, and `loss`, the objective's weights, each
declared once with its default, meaning and rule (`schema.field`). Adding a model is one file
that registers it (imported by `models/__init__.py` for the shipped ones, or by any module
before the config is read); nothing under `configs/` names its fields.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jraph
import ml_collections
import numpy as np

from alignrec_jax import graph as graph_lib
from alignrec_jax import schema
from alignrec_jax.errors import ConfigError

# objective(emb, features, batch, *, weights, batch_size, in_batch_groups) -> (loss, terms):
# the model's output on all nodes and one batch of (user, positive, negative) triples to the
# total loss and its weighted terms. `batch_size` is the configured one (a term may divide by
# it even for the short last batch); `in_batch_groups` >= 1 slices the in-batch terms.
Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
# item_graph(model group, modalities [I, D_m] each, F [I, D], search) -> the item-item graph.
ItemGraph = Callable[
  [ml_collections.ConfigDict, Sequence[np.ndarray], np.ndarray, graph_lib.KnnSearch],
  jraph.GraphsTuple,
]
# A module's fields that the data sets, not the config.
DATA_SIZES = ("num_users", "num_items", "feature_dims")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Everything a stage-2 model is.

  Attributes:
    name: its `config.model.name`.
    module: the Flax module, `(graphs, features) -> Embeddings`; its fields but the data's sizes
      (`DATA_SIZES`) are config fields, declared with `schema.field`.
    loss: the frozen dataclass of its objective's weights (`schema.field`s): the group's `loss`.
    objective: see `Objective`.
    options: a dataclass of the fields its set-up and trainer read (the item graph's k,
      `trainable_features`, `edge_dropout`), or None.
    item_graph: builds its item-item graph at set-up (None: it has none).
    content_in_scores: its scores read the item content (the features, or an item graph built
      from them), so an item without interactions still has a content-based representation.
    content_in_loss: its objective reads the content through terms of its own. BM3 has these
      but scores with ID embeddings only.
    in_batch_terms: its objective has terms over the batch's rows (InfoNCE, similarity) that
      `train.in_batch_groups` may compute within slices of the batch.
    tables: the parameter paths (within the module's parameters) of its [rows, d] row tables,
      users', items' or both, which `parallel.shard_tables` splits by rows across devices.
  """

  name: str
  module: type[nn.Module]
  loss: type
  objective: Objective
  options: type | None = None
  item_graph: ItemGraph | None = None
  content_in_scores: bool = False
  content_in_loss: bool = False
  in_batch_terms: bool = False
  tables: tuple[tuple[str, ...], ...] = ()

  @property
  def reads_content(self) -> bool:
    """Whether the set-up loads the item features for it."""
    return self.content_in_scores or self.content_in_loss

  @property
  def fine_tunes_features(self) -> bool:
    """Whether its options have `trainable_features` (F may be a parameter)."""
    return self._has_option("trainable_features")

  @property
  def prunes_graph(self) -> bool:
    """Whether its options have `edge_dropout` (the user-item graph pruned every epoch)."""
    return self._has_option("edge_dropout")

  def _has_option(self, name: str) -> bool:
    return self.options is not None and name in {f.name for f in dataclasses.fields(self.options)}

  def module_fields(self) -> tuple[str, ...]:
    """The module's config fields."""
    return tuple(schema.group_of(self.module, skip=DATA_SIZES).fields)

  def config_group(self) -> schema.Group:
    """`config.model.<name>`: the module's fields, the options, then `loss`."""
    fields = dict(schema.group_of(self.module, skip=DATA_SIZES).fields)
    if self.options is not None:
      fields.update(schema.group_of(self.options).fields)
    fields["loss"] = schema.group_of(self.loss, help=f"{self.name}'s loss weights")
    return schema.Group(schema.first_line(self.module.__doc__), fields)


_MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
  """Adds a model to the registry (its config group is generated here, so an undeclared field
  fails at import). Returns the spec, for the model file to keep."""
  spec.config_group()
  known = _MODELS.get(spec.name)
  if known is not None and known.module.__qualname__ != spec.module.__qualname__:
    raise ValueError(f"model name {spec.name!r} is taken by {known.module.__qualname__}")
  _MODELS[spec.name] = spec
  return spec


def names() -> tuple[str, ...]:
  """The registered models' names, in registration order."""
  return tuple(_MODELS)


def get(name: str) -> ModelSpec:
  """The spec of model `name`; ConfigError for an unknown one."""
  if name not in _MODELS:
    raise ConfigError(
      f"config.model.name: unknown model {name!r}; expected one of {', '.join(sorted(_MODELS))}"
    )
  return _MODELS[name]


def build(
  config: ml_collections.ConfigDict,
  *,
  num_users: int,
  num_items: int,
  batch_size: int,
  feature_dims: tuple[int, ...] = (),
  in_batch_groups: int = 1,
) -> tuple[nn.Module, Objective]:
  """(module, objective) of `config.model` (checked), the objective's weights bound.

  The objective is then `objective(emb, features, batch) -> (loss, terms)`. `feature_dims`:
  each modality's width in F, for a module that projects them one by one.
  """
  spec = get(config.name)
  group = config[spec.name]
  sizes = dict(num_users=num_users, num_items=num_items)
  if "feature_dims" in {f.name for f in dataclasses.fields(spec.module)}:
    sizes["feature_dims"] = tuple(feature_dims)
  module = spec.module(**sizes, **{name: group[name] for name in spec.module_fields()})
  weights = spec.loss(**group.loss.to_dict())
  objective = functools.partial(
    spec.objective,
    weights=weights,
    batch_size=batch_size,
    in_batch_groups=max(in_batch_groups, 1),
  )
  return module, objective


def check_in_batch_groups(spec: ModelSpec, groups: int, batch_size: int) -> None:
  """ConfigError unless `train.in_batch_groups` = `groups` suits the model and the batch."""
  if groups <= 1:
    return
  schema.require(
    spec.in_batch_terms,
    "config.train.in_batch_groups",
    f"model {spec.name!r} has no in-batch terms to group "
    f"({', '.join(n for n in names() if _MODELS[n].in_batch_terms)} have); leave it at 0",
  )
  schema.require(
    batch_size % groups == 0,
    "config.train.in_batch_groups",
    f"{groups} groups do not split the batch size {batch_size} evenly: choose a divisor of it",
  )
