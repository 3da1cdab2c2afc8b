"""The stage-1 run: pre-train the cross-modal encoder, then write every item's feature vector.

    features_path = run_pretraining(config, workdir)   # WORKDIR/stage1/stage1_feat.npy

One epoch (every item once, shuffled; the last batch padded with absent items, which add nothing
to any loss) is one jitted `lax.scan` over batches gathered on device from the full item inputs.
Randomness is a pure function of (seed, epoch, step), and the state, optimiser included, is
checkpointed with orbax after every epoch, so a killed run resumes to the same parameters as an
uninterrupted one. The output file is written once training ends, atomically, together with a
record of the settings that produced it: a later run with the same settings reuses it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignrec_jax import reporting, stage1
from alignrec_jax.checkpoint import Checkpointer
from alignrec_jax.content import Content, load_content
from alignrec_jax.models.fusion import CrossModalEncoder, ModalityInput
from alignrec_jax.train import finite_terms

FEATURE_FILE = "stage1_feat.npy"
RECORD_FILE = "stage1_feat.json"


class PretrainingDiverged(RuntimeError):
  """A stage-1 loss became NaN or Inf; the last good checkpoint is kept."""


def build_encoder(config: ml_collections.ConfigDict, content: Content) -> CrossModalEncoder:
  return CrossModalEncoder(specs=content.specs, width=config.width, num_heads=config.num_heads,
                           num_layers=config.num_layers, mlp_dim=config.mlp_dim or None,
                           output_dim=config.output_dim)


def make_optimizer(config: ml_collections.ConfigDict, *, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
  """AdamW with linear warm-up then cosine decay to 0, gradients clipped by global norm.

  The usual recipe for pre-training transformers (BEiT-3 among them); the schedule spans
  `config.epochs`, so it is a function of the step count alone and resumes exactly.
  """
  total = max(config.epochs * steps_per_epoch, 1)
  warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup_steps=warmup,
                                                decay_steps=total)
  return optax.chain(optax.clip_by_global_norm(config.clip_norm),
                     optax.adamw(schedule, weight_decay=config.weight_decay))


def gather_batch(inputs: Mapping[str, ModalityInput], rows: jax.Array, real: jax.Array
                 ) -> dict[str, ModalityInput]:
  """The items `rows` of the full inputs; rows where `real` is False become absent items."""
  batch = {}
  for name, inp in inputs.items():
    present = real if inp.present is None else inp.present[rows] & real
    batch[name] = ModalityInput(values=inp.values[rows],
                                mask=None if inp.mask is None else inp.mask[rows],
                                present=present)
  return batch


def make_pretrain_epoch(module: CrossModalEncoder, optimizer: optax.GradientTransformation, *,
                        num_items: int, batch_size: int, weights: Mapping[str, float],
                        mask_fraction: float, temperature: float):
  """A jitted `(state, inputs, key) -> (state, mean loss terms)` running one whole epoch.

  `inputs` are the full item inputs on device (an argument, never closed over). The state is
  donated: the caller must not use the input state afterwards.
  """
  num_batches = math.ceil(num_items / batch_size)
  step = stage1.make_train_step(module, optimizer, weights=dict(weights),
                                mask_fraction=mask_fraction, temperature=temperature)

  @functools.partial(jax.jit, donate_argnums=0)
  def train_epoch(state: stage1.PretrainState, inputs, key: jax.Array):
    order_key, step_key = jax.random.split(key)
    order = jax.random.permutation(order_key, num_items)
    padding = num_batches * batch_size - num_items
    rows = jnp.concatenate([order, jnp.zeros(padding, order.dtype)]).reshape(num_batches, -1)
    real = (jnp.arange(num_batches * batch_size) < num_items).reshape(num_batches, -1)
    keys = jax.vmap(functools.partial(jax.random.fold_in, step_key))(jnp.arange(num_batches))

    def body(state, xs):
      batch_rows, batch_real, batch_key = xs
      return step(state, gather_batch(inputs, batch_rows, batch_real), batch_key)

    state, terms = jax.lax.scan(body, state, (rows, real, keys))
    return state, jax.tree.map(jnp.mean, terms)

  return train_epoch


def settings_record(config: ml_collections.ConfigDict, folder: str, seed: int) -> dict[str, Any]:
  """What determines the stage-1 output: a finished output is reused only when this matches."""
  return {"stage1": json.loads(config.to_json()), "data": os.path.abspath(folder), "seed": seed}


def finished_output(directory: str, record: Mapping[str, Any]) -> str | None:
  """The feature file in `directory` if it was written with the settings `record`."""
  path, record_path = os.path.join(directory, FEATURE_FILE), os.path.join(directory, RECORD_FILE)
  if not (os.path.exists(path) and os.path.exists(record_path)):
    return None
  with open(record_path) as f:
    saved = json.load(f)
  return path if saved.get("settings") == json.loads(json.dumps(record)) else None


def _write_output(directory: str, features: np.ndarray, record: dict[str, Any]) -> str:
  """Writes the feature file and its record, each by an atomic rename (record last)."""
  path = os.path.join(directory, FEATURE_FILE)
  tmp = os.path.join(directory, f".{FEATURE_FILE}.tmp.npy")
  np.save(tmp, features)
  os.replace(tmp, path)
  tmp = os.path.join(directory, f".{RECORD_FILE}.tmp")
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, os.path.join(directory, RECORD_FILE))
  return path


def _fresh_run(config: ml_collections.ConfigDict, content: Content, seed: int):
  """(encoder, optimizer, initial state, root key of the epochs) of a run from `seed`."""
  module = build_encoder(config, content)
  optimizer = make_optimizer(config, steps_per_epoch=math.ceil(content.num_items
                                                               / config.batch_size))
  init_key, root_key = jax.random.split(jax.random.key(seed))
  rows = min(config.batch_size, content.num_items)
  # A host-side slice: the full inputs go to the device once, in `pretrain`, not here too.
  example = gather_batch(content.inputs, np.arange(rows), np.ones(rows, bool))
  return module, optimizer, stage1.init_state(module, optimizer, example, init_key), root_key


def restore_encoder(config: ml_collections.ConfigDict, content: Content, workdir: str, *,
                    seed: int) -> tuple[dict, CrossModalEncoder]:
  """(params, encoder) of the last checkpoint of the stage-1 run in WORKDIR/stage1.

  `content` may have modalities removed (`content.drop_modality`): only the specs must match
  the run's, which they do for the same files.
  """
  module, _, state, _ = _fresh_run(config, content, seed)
  checkpointer = Checkpointer(os.path.join(workdir, "stage1", "checkpoints"))
  try:
    restored = checkpointer.restore_latest(state)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no stage-1 checkpoint in {workdir}/stage1: run launch.pipeline "
                            "with this config and workdir first")
  state, meta = restored
  if meta["config"] != config.to_json() or meta["epoch"] != config.epochs - 1:
    raise ValueError(f"the stage-1 checkpoint in {workdir}/stage1 is of other settings or an "
                     f"unfinished run (epoch {meta['epoch']})")
  return state.params, module


def pretrain(config: ml_collections.ConfigDict, content: Content, directory: str, *,
             seed: int) -> tuple[stage1.PretrainState, CrossModalEncoder, dict[str, float]]:
  """Trains the encoder for `config.epochs` epochs, resuming from `directory` if it holds a run.

  Returns:
    (final state, encoder module, the last epoch's loss terms).
  """
  module, optimizer, state, root_key = _fresh_run(config, content, seed)
  num_items = content.num_items
  steps_per_epoch = math.ceil(num_items / config.batch_size)
  inputs = jax.device_put(content.inputs)
  reporting.log(f"stage-1 encoder: {_count(state.params):,} parameters, {config.num_layers} "
                f"layers of width {config.width}, output {config.output_dim}-d; "
                f"{num_items:,} items, {steps_per_epoch} steps an epoch")

  checkpointer = Checkpointer(os.path.join(directory, "checkpoints"))
  start_epoch = 0
  restored = checkpointer.restore_latest(state)
  if restored is not None:
    state, meta = restored
    if meta["config"] != config.to_json():
      raise ValueError(f"{directory} holds an unfinished stage-1 run with other settings; use "
                       "another workdir, or --redo_stage1 to discard it")
    start_epoch = meta["epoch"] + 1
    reporting.log(f"stage 1 resumed from the checkpoint of epoch {meta['epoch']}")
  metrics_log = reporting.MetricsLog(os.path.join(directory, "metrics.jsonl"),
                                     resume_from_epoch=start_epoch)
  train_epoch = make_pretrain_epoch(
      module, optimizer, num_items=num_items, batch_size=config.batch_size,
      weights=config.weights.to_dict(), mask_fraction=config.mask_fraction,
      temperature=config.temperature)
  terms: dict[str, float] = {}
  try:
    for epoch in range(start_epoch, config.epochs):
      tick = time.perf_counter()
      state, raw_terms = train_epoch(state, inputs, jax.random.fold_in(root_key, epoch))
      terms = finite_terms(raw_terms, epoch=epoch, checkpointer=checkpointer,
                           directory=directory, error=PretrainingDiverged, stage="stage 1: ")
      seconds = time.perf_counter() - tick
      checkpointer.save(epoch, state, {"epoch": epoch, "config": config.to_json()})
      metrics_log.write({"epoch": epoch, **terms, "train_seconds": seconds})
      reporting.log(f"stage 1 epoch {epoch:3d} | "
                    + " ".join(f"{k} {v:.4f}" for k, v in terms.items())
                    + f" | {seconds:.2f}s ({num_items / seconds:,.0f} items/s)")
  finally:
    checkpointer.close()
  return state, module, terms


def run_pretraining(config: ml_collections.ConfigDict, folder: str, workdir: str, *,
                    num_items: int, seed: int, redo: bool = False,
                    content: Content | None = None) -> str:
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
  """
  directory = os.path.join(workdir, "stage1")
  os.makedirs(directory, exist_ok=True)
  record = settings_record(config, folder, seed)
  if content is not None:
    record["content"] = content.description
  done = None if redo else finished_output(directory, record)
  if done is not None:
    reporting.log(f"stage 1: reusing {done} (same settings; pass --redo_stage1 to train again)")
    return done
  if redo or os.path.exists(os.path.join(directory, RECORD_FILE)):
    # A finished run with other settings (or one the user wants redone): its checkpoints must
    # not be resumed from. An unfinished run (no record yet) is resumed instead.
    _discard_run(directory)
  if content is None:
    tick = time.perf_counter()
    content = load_content(folder, config.modalities, num_items=num_items,
                           text_max_tokens=config.text_max_tokens,
                           vector_tokens=config.vector_tokens)
    reporting.log(f"stage-1 content ({time.perf_counter() - tick:.1f} s): "
                  f"{content.description}")
  tick = time.perf_counter()
  state, module, terms = pretrain(config, content, directory, seed=seed)
  features = stage1.encode_items(state.params, module, content.inputs, config.encode_batch_size)
  if not np.all(np.isfinite(features)):
    raise PretrainingDiverged("stage 1 produced non-finite item features")
  path = _write_output(directory, features, {"settings": record, "final_terms": terms,
                                             "shape": list(features.shape)})
  reporting.log(f"stage 1: wrote {features.shape[0]:,} x {features.shape[1]} item features to "
                f"{path} ({time.perf_counter() - tick:.1f} s)")
  return path


def _discard_run(directory: str) -> None:
  """Removes an earlier stage-1 run's checkpoints, metrics and output from `directory`."""
  shutil.rmtree(os.path.join(directory, "checkpoints"), ignore_errors=True)
  for name in ("metrics.jsonl", FEATURE_FILE, RECORD_FILE):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      os.remove(path)


def _count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
