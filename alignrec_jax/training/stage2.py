"""Stage 2, the recommender: its config, its step, epoch and evaluation, run by the training loop.

    summary = train_and_evaluate(config, workdir)

The set-up (`stage2_setup.build_experiment`) puts the dataset, features, graphs, sampler and
evaluation index on device. Each step samples its negatives on device and applies the model's
objective to one batch of training interactions; the whole epoch is one `lax.scan`
(`epoch.make_epoch`). The model is the one `config.model.name` picks (`models.registry`); with
item features fine-tuned (the reference's behaviour) they are a parameter, `params["features"]`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training.train_state import TrainState

from alignrec_jax import models, sampling, schema
from alignrec_jax.evaluation import evaluate
from alignrec_jax.evaluation.ranking import METRICS
from alignrec_jax.models import Batch
from alignrec_jax.models.registry import Objective
from alignrec_jax.propagation import bipartite_operator
from alignrec_jax.training import loop, optimizer, record, reporting
from alignrec_jax.training import parallel as parallel_lib
from alignrec_jax.training import stage2_setup as setup
from alignrec_jax.training.early_stopping import EarlyStopping
from alignrec_jax.training.epoch import ScannedEpoch
from alignrec_jax.training.parallel import Parallel
from alignrec_jax.training.stage2_setup import Experiment, TrainData


@dataclasses.dataclass(frozen=True)
class Train:
  """How stage 2 trains."""

  batch_size: int = schema.field(
    2048,
    "training interactions per step (the global batch, split across the devices)",
    schema.POSITIVE_INT,
  )
  max_epochs: int = schema.field(
    100,
    "the most epochs a run trains (the built-in demo's budget; dataset configs set the "
    "reference's 1000, which early stopping ends long before)",
    schema.POSITIVE_INT,
  )
  patience: int = schema.field(
    30,
    "stop on the (patience + 1)-th epoch in a row without a better validation score",
    schema.NONNEGATIVE_INT,
  )
  select_metric: str = schema.field(
    "recall@20", "the validation metric early stopping and selection read", schema.STRING
  )
  checkpoint_every: int = schema.field(
    1,
    "checkpoint every this many epochs (and at the last one); 1 loses nothing on a kill, "
    "sweeps of short runs on an accelerator use more",
    schema.POSITIVE_INT,
    neutral=True,
  )
  tensorboard: bool = schema.field(
    False,
    "also write every number of each epoch's record to WORKDIR/tensorboard (tensorboardX, the "
    "tensorboard extra)",
    schema.BOOL,
    neutral=True,
  )
  in_batch_groups: int = schema.field(
    0,
    "0: the in-batch terms (InfoNCE, similarity) span the whole batch, as the reference; N: "
    "within N equal slices of it (each row then has B / N - 1 in-batch negatives)",
    schema.NONNEGATIVE_INT,
  )


TRAIN = schema.group_of(Train)
# The experiment config's groups that stage 2 leaves to other readers.
UNREAD = ("stage1", "pipeline")
# Fields that hold paths: a run's identity compares them by file name.
PATH_FIELDS = ("data.path", "data.inter_file", "data.features")


def config_group(model_name: str | None = None) -> schema.Group:
  """Stage 2's part of the config; with `model_name`, for a run of that model (the other
  models' groups may be left out)."""
  return schema.Group(
    "a stage-2 run",
    {
      "seed": schema.Field(
        999, "the run's seed (the reference's)", schema.Rule(schema.is_int, "an integer")
      ),
      "data": setup.DATA,
      "model": setup.model_group(model_name),
      "optim": optimizer.GROUP,
      "train": TRAIN,
      "eval": setup.EVAL,
      "parallel": parallel_lib.GROUP,
    },
  )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a stage-2 field that nothing reads, is missing or out of range.

  Runs before any data is read, so a bad value costs nothing but the message.
  """
  name = config.model.get("name") if "model" in config else None
  spec = models.get(name) if name is not None else None  # an unknown model, named as such
  schema.check(config, config_group(name), path="config", unread=UNREAD)
  optimizer.check_config(config.optim, path="config.optim")
  parallel_lib.check_config(
    config.parallel, batch_size=config.train.batch_size, path="config.parallel"
  )
  metrics = [f"{m}@{k}" for m in METRICS for k in config.eval.ks]
  schema.require(
    config.train.select_metric in metrics,
    "config.train.select_metric",
    f"expected one of {', '.join(metrics)} (config.eval.ks), got {config.train.select_metric!r}",
  )
  models.registry.check_in_batch_groups(spec, config.train.in_batch_groups, config.train.batch_size)


def feature_files(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """The item-feature files a run of `config` reads whose contents its config does not fix:
  none for an ID-only model or random features, and not those the built-in synthetic data
  generates from its config."""
  data = config.data
  if data.synthetic_feature_dim or not models.get(config.model.name).reads_content:
    return []
  generated = set()
  if data.name == "synthetic":
    generated = {f"{name}.npy" for name, _ in data.synthetic.modality_dims}
  named = [f for f in data.features if os.path.isabs(f) or f not in generated]
  if all(os.path.isabs(f) for f in named):
    return list(named)
  folder = setup.dataset_folder(data, workdir)
  return [os.path.join(folder, f) for f in named]


def run_identity(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """What a stage-2 run of `config` computes (`record.identity`): its model's fields, less the
  neutral ones, and the contents of its feature files."""
  return record.identity(
    config,
    config_group(config.model.name),
    stage="stage 2",
    path_fields=PATH_FIELDS,
    inputs=feature_files(config, workdir),
  )


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
    tables: the parameter paths of the row tables (the model's declared ones, and the
      fine-tuned features), padded and split by rows when `table_shapes` is set.
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
  tables: frozenset[parallel_lib.Path] = frozenset()

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
      params = parallel_lib.pad_tables(params, self.tables)
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
  spec = models.get(config.model.name)
  module, objective = models.build(
    config.model,
    num_users=dataset.num_users,
    num_items=dataset.num_items,
    batch_size=config.train.batch_size,
    feature_dims=exp.feature_dims,
    in_batch_groups=config.train.in_batch_groups,
  )
  num_train = len(dataset.train)
  steps_per_epoch = math.ceil(num_train / config.train.batch_size)
  group = config.model[spec.name]
  trainable = spec.fine_tunes_features and group.trainable_features
  recommender = Recommender(
    module=module,
    objective=objective,
    optimizer=optimizer.make_optimizer(
      config.optim, steps_per_epoch=steps_per_epoch, num_epochs=config.train.max_epochs
    ),
    trainable_features=trainable,
    edge_keep=_edge_keep(group, num_train) if spec.prunes_graph else 0,
    num_examples=num_train,
    batch_size=config.train.batch_size,
    parallel=exp.parallel,
  )
  if not config.parallel.shard_tables:
    return recommender
  tables = frozenset(("net", *path) for path in spec.tables)
  if trainable:
    tables |= {("features",)}  # F, [I, D], is a row table too
  shapes = jax.eval_shape(recommender.init_params, jax.random.key(0), exp.train_data)
  return dataclasses.replace(
    recommender,
    table_shapes=shapes,
    tables=tables,
    parallel=dataclasses.replace(exp.parallel, tables=tables),
  )


def _edge_keep(group: ml_collections.ConfigDict, num_train: int) -> int:
  """Training edges each epoch keeps under `edge_dropout` (MMRec: int(E (1 - dropout))); 0: all."""
  dropout = group.edge_dropout
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

  def evaluate_params(params, improves: Callable[[int, dict], bool]) -> list[dict[str, Any]]:
    embeddings = embed(params, exp.train_data)
    mesh = exp.parallel.mesh  # users split across the training's devices
    results = evaluate(*embeddings, exp.eval_data, ks=ks, mesh=mesh)
    if exp.short_history_eval_data is not None and improves(0, results):
      # Only the best epoch's metrics are reported, so only improving epochs need these.
      short = evaluate(*embeddings, exp.short_history_eval_data, ks=ks, mesh=mesh)
      results.update(valid_short=short["valid"], test_short=short["test"])
    return [results]

  return loop.Task(
    name="stage 2",
    init_state=lambda key: recommender.init_state(key, exp.train_data),
    train_epoch=recommender.make_train_epoch(progress),
    data=exp.train_data,
    examples_per_epoch=recommender.num_examples,
    evaluate=evaluate_params,
    progress=progress,
    resume_free=("train.max_epochs",),
  )


def early_stopping(config: ml_collections.ConfigDict) -> EarlyStopping:
  """The stopping rule of `config.train`."""
  return EarlyStopping(patience=config.train.patience, metric=config.train.select_metric)


def log_setup(exp: Experiment) -> None:
  reporting.log(exp.dataset.summary())
  reporting.log(f"stage-2 features: {exp.feature_description}")
  reporting.log(
    "set-up seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in exp.setup_seconds.items())
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
    allow_config_change: resume a run whose saved identity differs (see `loop.train`).

  Returns:
    The run's summary (`record`): {"best_epoch", "epochs_run", "valid": {...}, "test": {...},
    ...} at the best validation epoch; also in WORKDIR/summary.json.
  """
  check_config(config)
  exp = setup.build_experiment(config, workdir)
  log_setup(exp)
  task = make_task(config, exp, build_recommender(config, exp))
  run = loop.Run(
    workdir=workdir,
    seed=config.seed,
    identity=run_identity(config, workdir),
    config=json.loads(config.to_json()),
  )
  _, (summary,) = loop.train(
    task,
    [run],
    max_epochs=config.train.max_epochs,
    checkpoint_every=config.train.checkpoint_every,
    early_stopping=early_stopping(config),
    allow_config_change=allow_config_change,
    tensorboard=config.train.tensorboard,
    ks=tuple(config.eval.ks),
  )
  return summary
