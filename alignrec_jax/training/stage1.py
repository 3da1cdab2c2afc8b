"""Stage 1, pre-training: the cross-modal encoder trained on item content, then every item's vector.

    features_path = run_stage1(config, folder, workdir, num_items=I, seed=s)  # WORKDIR/stage1/...

One epoch (every item once, shuffled; the last batch padded with absent items, which add nothing
to any loss) is one jitted `lax.scan` over batches gathered on device from the full item inputs,
run by the training loop like stage 2's (checkpoints every epoch, resumable, bit-identical). The
output file is written once training ends, atomically, before the run's summary, which names
it: a later run with the same identity (`record.finished`) reuses it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training.train_state import TrainState

from alignrec_jax import files, schema
from alignrec_jax.data import content as content_lib
from alignrec_jax.data.content import (
  Content,
  ModalityInput,
  ModalitySpec,
  load_content,
  parse_modalities,
)
from alignrec_jax.errors import ConfigError, WorkdirError
from alignrec_jax.models import encoder
from alignrec_jax.models.encoder import CrossModalEncoder, pretrain_loss
from alignrec_jax.training import loop, optimizer, record, reporting
from alignrec_jax.training.epoch import ScannedEpoch
from alignrec_jax.training.parallel import Parallel

FEATURE_FILE = "stage1_feat.npy"
Inputs = Mapping[str, ModalityInput]


@dataclasses.dataclass(frozen=True)
class Train:
  """How stage 1 trains."""

  batch_size: int = schema.field(
    256, "items per step (the global batch, split across the devices)", schema.POSITIVE_INT
  )
  epochs: int = schema.field(20, "epochs (the cosine schedule ends with them)", schema.POSITIVE_INT)
  encode_batch_size: int = schema.field(
    512, "items encoded at once after training", schema.POSITIVE_INT, neutral=True
  )
  tensorboard: bool = schema.field(
    False, "also write each epoch's record to WORKDIR/stage1/tensorboard", schema.BOOL, neutral=True
  )


def config_group() -> schema.Group:
  """`config.stage1`: its content, encoder, objective, optimiser and training."""
  return schema.Group(
    "stage 1: the cross-modal encoder pre-trained on the items' content (launch.pipeline)",
    {
      "data": schema.group_of(content_lib.Config),
      "model": encoder.config_group(),
      "loss": schema.group_of(encoder.PretrainLoss),
      "optim": schema.with_defaults(
        optimizer.GROUP,
        "stage 1's optimiser: AdamW, linear warm-up then cosine decay to 0, gradients clipped",
        name="adamw",
        schedule="warmup_cosine",
        lr_decay=1.0,
        lr_decay_epochs=1.0,
        warmup_epochs=2,
        weight_decay=0.05,
        clip_norm=1.0,
      ),
      "train": schema.group_of(Train),
    },
  )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a `config.stage1` field nothing reads, is missing or out of range."""
  schema.check(config, config_group(), path="config.stage1")
  schema.require(
    config.model.width % config.model.num_heads == 0,
    "config.stage1.model.width",
    f"{config.model.width} is not divisible by num_heads {config.model.num_heads}",
  )
  optimizer.check_config(config.optim, path="config.stage1.optim")
  try:
    parse_modalities(config.data.modalities)
  except ValueError as e:
    raise ConfigError(f"config.stage1.data.modalities: {e}") from None


def run_identity(
  config: ml_collections.ConfigDict, folder: str, seed: int, content: Content | None = None
) -> dict[str, Any]:
  """What a stage-1 run computes (`record.identity`): its fields, the run's seed, the dataset
  folder's name and the contents of its content files (and how `content` was altered, when
  given)."""
  extra = {"seed": seed, "data": os.path.basename(os.path.normpath(folder))}
  if content is not None:
    extra["content"] = content.description
  inputs = [os.path.join(folder, file) for _, _, file in parse_modalities(config.data.modalities)]
  return record.identity(config, config_group(), stage="stage 1", inputs=inputs, extra=extra)


def gather_batch(inputs: Inputs, rows: jax.Array, real: jax.Array) -> dict[str, ModalityInput]:
  """The items `rows` of the full inputs; rows where `real` is False become absent items."""
  batch = {}
  for name, inp in inputs.items():
    present = real if inp.present is None else inp.present[rows] & real
    batch[name] = ModalityInput(
      values=inp.values[rows], mask=None if inp.mask is None else inp.mask[rows], present=present
    )
  return batch


@dataclasses.dataclass(frozen=True)
class Pretrainer(ScannedEpoch):
  """The stage-1 encoder ready to train on one item catalogue.

  Attributes:
    module: the encoder.
    optimizer: the optax chain of `config.stage1.optim`.
    loss: the `pretrain_loss` settings (weights, mask fraction, temperature).
    num_examples: the items of an epoch.
    batch_size: items per step (the global batch, split across `parallel`'s devices).
    parallel: the devices.
  """

  module: CrossModalEncoder
  optimizer: optax.GradientTransformation
  loss: dict[str, Any]
  num_examples: int
  batch_size: int
  parallel: Parallel = Parallel(mesh=None)

  def init_state(self, key: jax.Array, example: Inputs) -> TrainState:
    """Fresh parameters (reconstruction heads included) and optimiser state."""
    # Under jit: eager initialisation dispatches every op separately and is many times slower.
    params = jax.jit(self.module.init)(key, example)["params"]
    state = TrainState.create(apply_fn=self.module.apply, params=params, tx=self.optimizer)
    return self.parallel.replicate(state.replace(step=jnp.zeros((), jnp.int32)))

  def train_step(
    self, state: TrainState, inputs: Inputs, rows: jax.Array, real: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """The pure step on the items `rows` [B] of the full inputs (`real` False on padding)."""
    batch = gather_batch(inputs, rows, real)
    grads, terms = jax.grad(
      lambda p: pretrain_loss(p, self.module, batch, key, **self.loss), has_aux=True
    )(state.params)
    return state.apply_gradients(grads=grads), terms


def build_encoder(
  config: ml_collections.ConfigDict, specs: tuple[ModalitySpec, ...]
) -> CrossModalEncoder:
  fields = schema.group_of(CrossModalEncoder, skip=("specs",)).fields
  return CrossModalEncoder(specs=specs, **{name: config.model[name] for name in fields})


def build_pretrainer(
  config: ml_collections.ConfigDict, content: Content, parallel: Parallel | None = None
) -> Pretrainer:
  """The Pretrainer of `config` (the `stage1` group) for these items."""
  batch_size = config.train.batch_size
  return Pretrainer(
    module=build_encoder(config, content.specs),
    optimizer=optimizer.make_optimizer(
      config.optim,
      steps_per_epoch=math.ceil(content.num_items / batch_size),
      num_epochs=config.train.epochs,
      path="config.stage1.optim",
    ),
    loss=dict(
      weights=config.loss.weights.to_dict(),
      mask_fraction=config.loss.mask_fraction,
      temperature=config.loss.temperature,
    ),
    num_examples=content.num_items,
    batch_size=batch_size,
    parallel=parallel or Parallel(mesh=None),
  )


def _example(content: Content, batch_size: int) -> dict[str, ModalityInput]:
  """The first items as an init example, sliced on the host: the full inputs go to the device
  once, for the epochs, not here too."""
  rows = min(batch_size, content.num_items)
  return gather_batch(content.inputs, np.arange(rows), np.ones(rows, bool))


def make_task(
  config: ml_collections.ConfigDict,
  content: Content,
  pretrainer: Pretrainer,
  finish: Callable[[TrainState], dict[str, Any]] | None = None,
) -> loop.Task:
  """Stage 1 as the training loop runs it: epochs of pre-training, no evaluation; `finish`
  writes the output (`run_stage1`)."""
  example = _example(content, config.train.batch_size)
  progress = reporting.EpochProgress(
    "stage 1",
    steps=math.ceil(content.num_items / pretrainer.batch_size),
    examples_per_step=pretrainer.batch_size,
  )
  return loop.Task(
    name="stage 1",
    init_state=lambda key: pretrainer.init_state(key, example),
    train_epoch=pretrainer.make_train_epoch(progress),
    data=pretrainer.parallel.replicate(content.inputs),
    examples_per_epoch=content.num_items,
    progress=progress,
    finish=finish,
  )


# ----------------------------------------------------------------------------- item features


@functools.partial(jax.jit, static_argnames=("module",))
def _encode_batch(params, batch: Inputs, module: CrossModalEncoder) -> jax.Array:
  return module.apply({"params": params}, batch, method=CrossModalEncoder.item_features)


def _pad_rows(spec: ModalitySpec, inp: ModalityInput, start: int, size: int) -> ModalityInput:
  """Rows [start, start + size) of one modality as NumPy, padded past the end with absent rows."""
  values = np.asarray(inp.values)
  n = values.shape[0]
  stop = min(start + size, n)
  pad = size - (stop - start)

  def take(array, fill):
    rows = np.asarray(array)[start:stop]
    if pad:
      rows = np.concatenate([rows, np.full((pad,) + rows.shape[1:], fill, rows.dtype)])
    return rows

  present = np.ones(n, bool) if inp.present is None else inp.present
  mask = None if inp.mask is None else take(inp.mask, False)
  return ModalityInput(
    values=take(values, -1 if spec.kind == "categorical" else 0),
    mask=mask,
    present=take(present, False),
  )


def encode_items(params, module: CrossModalEncoder, inputs: Inputs, batch_size: int) -> np.ndarray:
  """The item features of all N items (`CrossModalEncoder.item_features`): [N, feature_dim].

  Items go through in batches of exactly `batch_size` (the last padded with absent rows), so
  the encoder compiles once whatever N is.
  """
  inputs = jax.device_get(inputs)  # to the host once, not once per batch
  n = np.asarray(next(iter(inputs.values())).values).shape[0]
  out = []
  for start in range(0, n, batch_size):
    batch = {s.name: _pad_rows(s, inputs[s.name], start, batch_size) for s in module.specs}
    out.append(np.asarray(_encode_batch(params, batch, module)))
  return np.concatenate(out)[:n] if out else np.zeros((0, module.feature_dim), np.float32)


def finished_output(directory: str, identity: Mapping[str, Any]) -> str | None:
  """The feature file of the stage-1 run in `directory` if it finished with this identity."""
  summary = record.finished(directory, identity)
  return None if summary is None else os.path.join(directory, summary["output"]["file"])


def restore_encoder(
  config: ml_collections.ConfigDict, content: Content, workdir: str, *, seed: int
) -> tuple[dict, CrossModalEncoder]:
  """(params, encoder) of the last checkpoint of the finished stage-1 run in WORKDIR/stage1.

  `content` may have modalities removed (`content.drop_modality`): only the specs must match
  the run's, which they do for the same files.
  """
  pretrainer = build_pretrainer(config, content)
  example = _example(content, config.train.batch_size)
  restored = loop.restore(
    lambda key: pretrainer.init_state(key, example), os.path.join(workdir, "stage1")
  )
  if restored is None:
    raise WorkdirError(
      f"no stage-1 checkpoint in {workdir}/stage1: run launch.pipeline with "
      "this config and workdir first"
    )
  state, meta = restored
  if meta["config"] != json.loads(config.to_json()) or meta["epoch"] != config.train.epochs - 1:
    raise WorkdirError(
      f"the stage-1 checkpoint in {workdir}/stage1 is of other settings or an "
      f"unfinished run (epoch {meta['epoch']})"
    )
  return state.params, pretrainer.module


def run_stage1(
  config: ml_collections.ConfigDict,
  folder: str,
  workdir: str,
  *,
  num_items: int,
  seed: int,
  redo: bool = False,
  content: Content | None = None,
  allow_config_change: bool = False,
  parallel: Parallel | None = None,
) -> str:
  """Stage 1 end to end: content, pre-training, item features. Returns the feature file's path.

  Args:
    config: the `stage1` section of the experiment config.
    folder: the dataset folder holding the content files.
    workdir: stage 1 writes under WORKDIR/stage1.
    num_items: the dataset's item count.
    seed: the run's seed.
    redo: train again even if WORKDIR/stage1 holds a finished output with these settings (the
      checkpoints of the earlier run are discarded).
    content: the inputs, if already loaded (e.g. with a modality removed); default: read them
      as `config` says.
    allow_config_change: resume an unfinished run whose saved config differs (`loop.train`).
    parallel: the devices (default: one).
  """
  check_config(config)
  parallel = parallel or Parallel(mesh=None)
  if config.train.batch_size % parallel.num_devices:
    raise ConfigError(
      f"config.stage1.train.batch_size {config.train.batch_size} does not split "
      f"evenly across {parallel.num_devices} devices (config.parallel)"
    )
  directory = os.path.join(workdir, "stage1")
  identity = run_identity(config, folder, seed, content)
  # Held from the reuse check to the output: no other run may discard or write this folder.
  with files.WorkdirLock(directory):
    done = None if redo else finished_output(directory, identity)
    if done is not None:
      reporting.log(f"stage 1: reusing {done} (same settings; pass --redo_stage1 to train again)")
      return done
    if redo or record.read_summary(directory) is not None:
      # A finished run with other settings (or one the user wants redone): its checkpoints must
      # not be resumed from. An unfinished run (no summary yet) is resumed instead.
      _discard_run(directory)
    return _train_and_encode(
      config,
      folder,
      directory,
      identity,
      num_items=num_items,
      seed=seed,
      content=content,
      allow_config_change=allow_config_change,
      parallel=parallel,
    )


def _train_and_encode(
  config: ml_collections.ConfigDict,
  folder: str,
  directory: str,
  identity: dict[str, Any],
  *,
  num_items: int,
  seed: int,
  content: Content | None,
  allow_config_change: bool,
  parallel: Parallel,
) -> str:
  """`run_stage1` past the reuse check: content, the training loop, the feature file."""
  if content is None:
    tick = time.perf_counter()
    content = load_content(
      folder,
      config.data.modalities,
      num_items=num_items,
      text_max_tokens=config.data.text_max_tokens,
      vector_tokens=config.model.vector_tokens,
    )
    reporting.log(f"stage-1 content ({time.perf_counter() - tick:.1f} s): {content.description}")
  tick = time.perf_counter()
  pretrainer = build_pretrainer(config, content, parallel)

  def write_output(state: TrainState) -> dict[str, Any]:
    features = encode_items(
      state.params, pretrainer.module, content.inputs, config.train.encode_batch_size
    )
    if not np.all(np.isfinite(features)):
      raise loop.TrainingDiverged("stage 1 produced non-finite item features")
    path = os.path.join(directory, FEATURE_FILE)
    files.atomic_write(path, lambda f: np.save(f, features))
    reporting.log(
      f"stage 1: wrote {features.shape[0]:,} x {features.shape[1]} item features to "
      f"{path} ({time.perf_counter() - tick:.1f} s)"
    )
    return {"output": {"file": FEATURE_FILE, "shape": list(features.shape)}}

  task = make_task(config, content, pretrainer, finish=write_output)
  shapes = jax.eval_shape(task.init_state, jax.random.key(0)).params
  reporting.log(
    f"stage-1 encoder: {_count(shapes):,} parameters, {config.model.num_layers} "
    f"layers of width {config.model.width}, output {_describe_output(pretrainer.module)}; "
    f"{num_items:,} items, {math.ceil(num_items / config.train.batch_size)} steps "
    "an epoch"
  )
  run = loop.Run(
    workdir=directory, seed=seed, identity=identity, config=json.loads(config.to_json())
  )
  loop.train(
    task,
    [run],
    max_epochs=config.train.epochs,
    allow_config_change=allow_config_change,
    tensorboard=config.train.tensorboard,
  )
  return os.path.join(directory, FEATURE_FILE)


def _discard_run(directory: str) -> None:
  """Removes an earlier stage-1 run's checkpoints, metrics and output from `directory`."""
  shutil.rmtree(os.path.join(directory, "checkpoints"), ignore_errors=True)
  for name in ("metrics.jsonl", record.SUMMARY_FILE, "curves.png", FEATURE_FILE):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      os.remove(path)


def _describe_output(module: CrossModalEncoder) -> str:
  if module.output == "cls":
    return f"{module.output_dim}-d"
  anchors = " + ".join(f"{s.name} {s.input_dim}" for s in module.anchors)
  return f"{module.feature_dim}-d ({anchors} + CLS {module.output_dim}, anchored)"


def _count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
