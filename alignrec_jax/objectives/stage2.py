"""Stage 2's models by name, each a Flax module plus the objective it trains with.

An objective maps the model's output on all nodes and one batch of (user, positive, negative)
triples to (loss, {term: weighted value}). Its weights are a frozen dataclass (`AlignRecLoss`,
`EmbRegLoss`) built from the model's config group `config.model.<name>.loss`; `MODELS`
declares, per model, every field its group may hold, so a field nobody reads is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import ml_collections
import numpy as np

from alignrec_jax import graph as graph_lib
from alignrec_jax.errors import (
  BOOL,
  NONNEGATIVE,
  NONNEGATIVE_INT,
  POSITIVE,
  POSITIVE_INT,
  ConfigError,
  check_fields,
  check_values,
  is_number,
)
from alignrec_jax.models.alignrec import AlignRec
from alignrec_jax.models.bm3 import BM3
from alignrec_jax.models.common import Embeddings
from alignrec_jax.models.freedom import FREEDOM
from alignrec_jax.models.lightgcn import LightGCN
from alignrec_jax.models.mf import MatrixFactorization
from alignrec_jax.models.mgcn import MGCN
from alignrec_jax.models.vbpr import VBPR
from alignrec_jax.objectives import losses


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
  """B training triples; `mask` is 0 on the padding of the last partial batch."""

  users: jax.Array  # [B] int32
  pos_items: jax.Array  # [B] int32
  neg_items: jax.Array  # [B] int32
  mask: jax.Array  # [B] float32
  key: jax.Array | None = None  # the step's randomness for an objective that needs some (BM3)


@dataclasses.dataclass(frozen=True)
class AlignRecLoss:
  """AlignRec's stage-2 loss weights (the reference's defaults in configs/default.py).

  Attributes:
    l2_weight: the L2 term, 0.5 (|z_u|^2 + |z_pos|^2 + |z_neg|^2) summed over the batch and
      divided by the configured batch size.
    uia_weight: user-item alignment, 1 - mean cos(z_u, z_pos).
    cl_weight: content-category alignment, the two InfoNCE terms (items and users).
    sim_weight: similarity preservation, ||M_i M_i^T - cos(F)||_F / B.
    temperature: the InfoNCE temperature tau.
  """

  l2_weight: float
  uia_weight: float
  cl_weight: float
  sim_weight: float
  temperature: float


def alignrec_objective(
  emb: Embeddings,
  features: jax.Array,
  batch: Batch,
  *,
  batch_size: int,
  weights: AlignRecLoss,
  in_batch_groups: int = 1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The five terms of AlignRec's stage-2 loss on one batch, as the reference computes them.

  Args:
    emb: the model's output.
    features: [I, D] the current item features F (the similarity target is their cosine).
    batch: B (user, positive, negative) triples with a padding mask.
    batch_size: the configured batch size; the L2 term divides by it even for a short batch.
    weights: the term weights and the temperature.
    in_batch_groups: the in-batch terms (InfoNCE, similarity) within this many equal slices
      of the batch (`losses.in_groups`; `train.in_batch_groups`); 1: the whole batch.

  Returns:
    (total loss, {term name: weighted value}).
  """
  u, pos, neg, mask = batch.users, batch.pos_items, batch.neg_items, batch.mask
  zu, zp, zn = emb.user_rows(u), emb.item_rows(pos), emb.item_rows(neg)
  tau = weights.temperature

  def info_nce(anchors: jax.Array, positives: jax.Array) -> jax.Array:
    return losses.in_groups(
      lambda a, p, m: losses.info_nce(anchors=a, positives=p, temperature=tau, mask=m),
      in_batch_groups,
      mask,
      anchors,
      positives,
    )

  similarity = losses.in_groups(
    lambda e, f, m: losses.similarity_preservation(embeddings=e, features=f, mask=m),
    in_batch_groups,
    mask,
    emb.content_items[pos],
    features[pos],
  )
  terms = {
    "bpr": losses.bpr(pos_scores=jnp.sum(zu * zp, -1), neg_scores=jnp.sum(zu * zn, -1), mask=mask),
    "l2": weights.l2_weight
    * losses.half_squared_norms(zu, zp, zn, mask=mask, denominator=batch_size),
    "uia": weights.uia_weight * losses.cosine_alignment(users=zu, items=zp, mask=mask),
    "cca": weights.cl_weight
    * (
      info_nce(emb.content_items[pos], emb.ids[emb.num_users + pos])
      + info_nce(emb.content_users[u], emb.ids[u])
    ),
    "sim": weights.sim_weight * similarity,
  }
  return sum(terms.values()), terms


@dataclasses.dataclass(frozen=True)
class EmbRegLoss:
  """The loss weight of MMRec's BPR, VBPR and LightGCN.

  Attributes:
    reg_weight: multiplies the Frobenius norms (not squared) of the batch's layer-0 user,
      positive and negative rows, divided by the batch's real rows (MMRec's EmbLoss).
  """

  reg_weight: float


def bpr_emb_objective(
  emb: Embeddings,
  features: jax.Array | None,
  batch: Batch,
  *,
  batch_size: int,
  weights: EmbRegLoss,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MMRec's BPR, VBPR and LightGCN loss: BPRLoss (with its 1e-10) on the final rows plus
  reg_weight * EmbLoss, the Frobenius norms of the layer-0 rows (`emb.ego`) over B.

  For BPR and VBPR the layer-0 rows are the final ones (no propagation).
  """
  del features, batch_size  # no content; the regulariser divides by the real rows
  zu = emb.user_rows(batch.users)
  zp = emb.item_rows(batch.pos_items)
  zn = emb.item_rows(batch.neg_items)
  bpr = losses.bpr(
    pos_scores=jnp.sum(zu * zp, -1), neg_scores=jnp.sum(zu * zn, -1), mask=batch.mask, eps=1e-10
  )
  reg = weights.reg_weight * losses.frobenius_norms(
    emb.ego[batch.users],
    emb.ego[emb.num_users + batch.pos_items],
    emb.ego[emb.num_users + batch.neg_items],
    mask=batch.mask,
  )
  return bpr + reg, {"bpr": bpr, "reg": reg}


@dataclasses.dataclass(frozen=True)
class FreedomLoss:
  """FREEDOM's loss weight.

  Attributes:
    reg_weight: MMRec's name for the weight of the auxiliary BPR terms, one per modality, that
      score each user against the positive and negative items' projected features.
  """

  reg_weight: float


def freedom_objective(
  emb: Embeddings, features: jax.Array, batch: Batch, *, batch_size: int, weights: FreedomLoss
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MMRec's FREEDOM loss: BPR (-logsigmoid) on z, plus reg_weight x the modalities' BPR terms."""
  del features, batch_size
  zu = emb.user_rows(batch.users)
  pos, neg, mask = batch.pos_items, batch.neg_items, batch.mask

  def bpr(items: Callable[[jax.Array], jax.Array]) -> jax.Array:
    return losses.bpr(
      pos_scores=jnp.sum(zu * items(pos), -1), neg_scores=jnp.sum(zu * items(neg), -1), mask=mask
    )

  terms = {"bpr": bpr(emb.item_rows)}
  # A Python-level switch, so that with weight 0 (MMRec's first value) the projections are
  # dead code that XLA removes rather than a product with zero.
  if weights.reg_weight:
    terms["modality_bpr"] = weights.reg_weight * sum(
      bpr(lambda items, table=table: table[items]) for table in emb.modality_items
    )
  return sum(terms.values()), terms


@dataclasses.dataclass(frozen=True)
class BM3Loss:
  """BM3's loss weights.

  Attributes:
    dropout: the fraction of the targets' entries dropped out (scaled as torch's F.dropout).
    reg_weight: multiplies MMRec's EmbLoss over the whole target tables, (|users|_F +
      |items|_F) / I.
    cl_weight: weight of the modality terms (each modality's online view against the item's
      target and against its own dropped-out projection).
  """

  dropout: float
  reg_weight: float
  cl_weight: float


def bm3_objective(
  emb: Embeddings, features: jax.Array, batch: Batch, *, batch_size: int, weights: BM3Loss
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MMRec's BM3 loss on the batch's (user, positive) pairs (no negatives): 1 - cosine between
  each online view and a dropped-out, gradient-stopped target."""
  del features, batch_size
  users, items, mask = batch.users, batch.pos_items, batch.mask
  user_key, item_key, *modality_keys = jax.random.split(batch.key, 2 + len(emb.modality_items))

  def target(key: jax.Array, rows: jax.Array) -> jax.Array:
    rows = jax.lax.stop_gradient(rows)
    keep = jax.random.bernoulli(key, 1.0 - weights.dropout, rows.shape)
    return jnp.where(keep, rows / (1.0 - weights.dropout), 0.0)

  num_users = emb.num_users
  user_target = target(user_key, emb.targets[users])
  item_target = target(item_key, emb.targets[num_users + items])
  terms = {
    "ui": losses.cosine_alignment(users=emb.ids[users], items=item_target, mask=mask)
    + losses.cosine_alignment(users=emb.ids[num_users + items], items=user_target, mask=mask),
    "reg": weights.reg_weight
    * (jnp.linalg.norm(emb.targets[:num_users]) + jnp.linalg.norm(emb.targets[num_users:]))
    / (emb.targets.shape[0] - num_users),
  }
  if emb.modality_items:
    modality = 0.0
    for key, online, own in zip(
      modality_keys, emb.modality_items, emb.modality_targets, strict=True
    ):
      modality += losses.cosine_alignment(users=online[items], items=item_target, mask=mask)
      modality += losses.cosine_alignment(
        users=online[items], items=target(key, own[items]), mask=mask
      )
    terms["modality"] = weights.cl_weight * modality
  return sum(terms.values()), terms


@dataclasses.dataclass(frozen=True)
class MGCNLoss:
  """MGCN's loss weights.

  Attributes:
    reg_weight: the L2 term, 0.5 (|z_u|^2 + |z_pos|^2 + |z_neg|^2) summed over the batch and
      divided by the configured batch size (the final rows, as MMRec's MGCN computes it).
    cl_weight: MMRec's cl_loss: the two InfoNCE terms between the side view and the user-item
      view (positive items, then users).
    temperature: their temperature (MMRec's fixed 0.2).
  """

  reg_weight: float
  cl_weight: float
  temperature: float


def mgcn_objective(
  emb: Embeddings,
  features: jax.Array,
  batch: Batch,
  *,
  batch_size: int,
  weights: MGCNLoss,
  in_batch_groups: int = 1,
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


Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
# item_graph(model group, modalities [I, D_m] each, F [I, D], search) -> the item-item graph.
ItemGraph = Callable[
  [ml_collections.ConfigDict, Sequence[np.ndarray], np.ndarray, graph_lib.KnnSearch],
  jraph.GraphsTuple,
]


def alignrec_item_graph(
  group, modalities, features, search: graph_lib.KnnSearch = graph_lib.EXACT_SEARCH
) -> jraph.GraphsTuple:
  """AlignRec's S: the cosine kNN graph of F (all modalities combined), weighted, normalised."""
  del modalities
  return graph_lib.knn_graph(
    features, k=group.knn_k, include_self=group.knn_include_self, search=search
  )


def freedom_item_graph(
  group, modalities, features, search: graph_lib.KnnSearch = graph_lib.EXACT_SEARCH
) -> jraph.GraphsTuple:
  """FREEDOM's frozen S: each modality's binary kNN graph, the first weighted image_weight."""
  del features
  if len(modalities) > 2:
    raise ConfigError(
      f"config.model.freedom: FREEDOM mixes one or two modalities (image, text), got "
      f"{len(modalities)} feature files"
    )
  weights = [group.image_weight, 1.0 - group.image_weight][: len(modalities)]
  if len(modalities) == 1:
    weights = [1.0]
  return graph_lib.mixed_knn_graph(list(modalities), weights, k=group.knn_k, search=search)


def mgcn_item_graph(
  group, modalities, features, search: graph_lib.KnnSearch = graph_lib.EXACT_SEARCH
) -> jraph.GraphsTuple:
  """MGCN's frozen item graphs: each modality's weighted cosine kNN graph (self included),
  normalised as AlignRec's, side by side as one block-diagonal graph over M x I nodes."""
  del features
  return graph_lib.block_diagonal(
    [graph_lib.knn_graph(m, k=group.knn_k, include_self=True, search=search) for m in modalities]
  )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A stage-2 model: what `config.model.<name>` configures and who reads each field.

  Attributes:
    module: the Flax module; its fields (but the data's sizes) are config fields.
    objective: `objective(emb, features, batch, *, batch_size, weights)`.
    loss: the dataclass of the objective's weights: the fields of the group's `loss`.
    uses_content: whether the module reads the item features F.
    item_graph: builds the item-item graph at set-up (None: the model has none).
    content_fields: fields the set-up and the trainer read (the item graph's, "trainable_features":
      whether F is fine-tuned, "edge_dropout": the user-item graph pruned every epoch).
  """

  module: type[nn.Module]
  objective: Objective
  loss: type
  uses_content: bool = False
  item_graph: ItemGraph | None = None
  content_fields: tuple[str, ...] = ()

  @property
  def uses_knn_graph(self) -> bool:
    """Whether the set-up builds an item-item graph (and the users' block of the UI graph)."""
    return self.item_graph is not None

  def module_fields(self) -> tuple[str, ...]:
    """The module's configurable fields: all but Flax's and the data's sizes."""
    skip = {"parent", "name", "num_users", "num_items", "feature_dims"}
    return tuple(f.name for f in dataclasses.fields(self.module) if f.name not in skip)


MODELS: dict[str, ModelSpec] = {
  "alignrec": ModelSpec(
    AlignRec,
    alignrec_objective,
    AlignRecLoss,
    uses_content=True,
    item_graph=alignrec_item_graph,
    content_fields=("knn_k", "knn_include_self", "trainable_features"),
  ),
  "freedom": ModelSpec(
    FREEDOM,
    freedom_objective,
    FreedomLoss,
    uses_content=True,
    item_graph=freedom_item_graph,
    content_fields=("knn_k", "image_weight", "edge_dropout", "trainable_features"),
  ),
  "bm3": ModelSpec(
    BM3, bm3_objective, BM3Loss, uses_content=True, content_fields=("trainable_features",)
  ),
  "mgcn": ModelSpec(
    MGCN,
    mgcn_objective,
    MGCNLoss,
    uses_content=True,
    item_graph=mgcn_item_graph,
    content_fields=("knn_k", "trainable_features"),
  ),
  "bpr": ModelSpec(MatrixFactorization, bpr_emb_objective, EmbRegLoss),
  "lightgcn": ModelSpec(LightGCN, bpr_emb_objective, EmbRegLoss),
  "vbpr": ModelSpec(VBPR, bpr_emb_objective, EmbRegLoss, uses_content=True),
}


# The value each field of a model group must hold (loss weights: >= 0, the temperature > 0).
FIELD_RULES = {
  "embed_dim": POSITIVE_INT,
  "num_ui_layers": NONNEGATIVE_INT,
  "num_knn_layers": NONNEGATIVE_INT,
  "num_mm_layers": NONNEGATIVE_INT,
  "image_weight": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
  "edge_dropout": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
  "knn_k": POSITIVE_INT,
  "knn_include_self": BOOL,
  "trainable_features": BOOL,
}


# Loss fields other than weights (which must be >= 0).
LOSS_FIELD_RULES = {
  "temperature": POSITIVE,
  "dropout": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
}


def model_spec(config: ml_collections.ConfigDict) -> ModelSpec:
  """The spec of `config.name` (the `config.model` group), its group checked field by field.

  Raises:
    ConfigError: an unknown model, a field of its group (or of the group's `loss`) that nothing
      reads or that is missing, or a value out of range.
  """
  if config.name not in MODELS:
    raise ConfigError(
      f"config.model.name: unknown model {config.name!r}; expected one of "
      f"{', '.join(sorted(MODELS))}"
    )
  if config.name not in config:
    raise ConfigError(
      f"config.model.{config.name}: the group of model {config.name!r} is "
      "missing (configs/default.py has one per model)"
    )
  spec = MODELS[config.name]
  group = config[config.name]
  path = f"config.model.{config.name}"
  check_fields(group, (*spec.module_fields(), *spec.content_fields, "loss"), path=path)
  loss_fields = [f.name for f in dataclasses.fields(spec.loss)]
  check_fields(group.loss, loss_fields, path=f"{path}.loss")
  check_values(group, {f: FIELD_RULES[f] for f in group if f != "loss"}, path=path)
  check_values(
    group.loss,
    {f: LOSS_FIELD_RULES.get(f, NONNEGATIVE) for f in loss_fields},
    path=f"{path}.loss",
  )
  return spec


def build(
  config: ml_collections.ConfigDict,
  *,
  num_users: int,
  num_items: int,
  batch_size: int,
  feature_dims: tuple[int, ...] = (),
  in_batch_groups: int = 1,
) -> tuple[nn.Module, Objective]:
  """(module, objective) of `config.model`, the objective's weights and batch size bound.

  The objective is then `objective(emb, features, batch) -> (loss, terms)`. `feature_dims`:
  each modality's width in F, for a module that projects them one by one (FREEDOM).
  `in_batch_groups` > 1: the in-batch terms within that many slices of the batch (a model
  without such terms is a ConfigError).
  """
  spec = model_spec(config)
  group = config[config.name]
  sizes = dict(num_users=num_users, num_items=num_items)
  if any(f.name == "feature_dims" for f in dataclasses.fields(spec.module)):
    sizes["feature_dims"] = tuple(feature_dims)
  module = spec.module(**sizes, **{field: group[field] for field in spec.module_fields()})
  weights = spec.loss(**group.loss.to_dict())
  options = {}
  if in_batch_groups > 1:
    if not has_in_batch_terms(config):
      raise ConfigError(
        f"train.in_batch_groups={in_batch_groups}: model {config.name!r} has no in-batch terms "
        "to group (AlignRec and MGCN have); leave it at 0"
      )
    options["in_batch_groups"] = in_batch_groups
  return module, functools.partial(
    spec.objective, batch_size=batch_size, weights=weights, **options
  )


def has_in_batch_terms(config: ml_collections.ConfigDict) -> bool:
  """Whether the model's objective has in-batch terms that `train.in_batch_groups` can group."""
  return "in_batch_groups" in inspect.signature(model_spec(config).objective).parameters
