"""One optimiser builder for both stages: an `optax.chain` made from a config's `optim` group.

The chain is, in order: gradient clipping by global norm (only when `clip_norm` > 0), Adam's
moment scaling, decoupled weight decay (AdamW only), and the learning-rate schedule. Nothing that
is switched off is added, so the reference's plain Adam costs exactly what `optax.adam` costs.

Schedules are functions of the step count alone, so a resumed run continues exactly:
  * "epoch_decay": lr * lr_decay ** (epoch / lr_decay_epochs), constant within an epoch (the
    reference steps a LambdaLR once per epoch; here the epoch is read off the step count);
  * "warmup_cosine": linear warm-up from 0 over `warmup_epochs`, then cosine decay to 0 at the
    end of the run (the usual recipe for pre-training transformers, BEiT-3 among them);
  * "constant": lr.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections
import optax

from alignrec_jax import schema

NAMES = ("adam", "adamw")
SCHEDULES = ("epoch_decay", "warmup_cosine", "constant")
_UNIT = schema.Rule(lambda v: schema.is_number(v) and 0 <= v < 1, "a number in [0, 1)")


@dataclasses.dataclass(frozen=True)
class Config:
  """The optimiser (stage 2's defaults: Adam with the reference's per-epoch decay)."""

  name: str = schema.field("adam", "adam, or adamw (decoupled weight decay)", schema.one_of(*NAMES))
  lr: float = schema.field(1e-3, "the learning rate", schema.POSITIVE)
  schedule: str = schema.field(
    "epoch_decay",
    "epoch_decay (lr * lr_decay ** (epoch / lr_decay_epochs)), warmup_cosine or constant",
    schema.one_of(*SCHEDULES),
  )
  lr_decay: float = schema.field(
    0.96,
    "epoch_decay's factor (1.0: no decay)",
    schema.Rule(lambda v: schema.is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
  )
  lr_decay_epochs: float = schema.field(
    50.0, "epoch_decay: epochs over which the rate falls by lr_decay", schema.POSITIVE
  )
  warmup_epochs: int = schema.field(
    0, "warmup_cosine: epochs of linear warm-up from 0", schema.NONNEGATIVE_INT
  )
  b1: float = schema.field(0.9, "Adam's first-moment decay", _UNIT)
  b2: float = schema.field(0.999, "Adam's second-moment decay", _UNIT)
  eps: float = schema.field(1e-8, "Adam's epsilon", schema.POSITIVE)
  weight_decay: float = schema.field(0.0, "adamw's decoupled weight decay", schema.NONNEGATIVE)
  clip_norm: float = schema.field(
    0.0, "clip the gradients to this global norm (0: no clipping)", schema.NONNEGATIVE
  )


GROUP = schema.group_of(Config)
# A schedule's parameters that another schedule ignores must keep these values: a warm-up set
# for the epoch decay would otherwise do nothing, silently.
_NEUTRAL = {"lr_decay": 1.0, "warmup_epochs": 0}
_READS = {"epoch_decay": ("lr_decay",), "warmup_cosine": ("warmup_epochs",), "constant": ()}


def check_config(config: ml_collections.ConfigDict, *, path: str) -> None:
  """Raises ConfigError for an unknown or missing field, or a bad value or combination."""
  schema.check(config, GROUP, path=path)
  schema.require(
    config.name == "adamw" or not config.weight_decay,
    f"{path}.weight_decay",
    f"{config.weight_decay} needs name 'adamw' (plain Adam here has no weight decay)",
  )
  for field, neutral in _NEUTRAL.items():
    schema.require(
      field in _READS[config.schedule] or config[field] == neutral,
      f"{path}.{field}",
      f"{config[field]} has no effect with schedule {config.schedule!r} (leave it at {neutral})",
    )


def learning_rate(
  config: ml_collections.ConfigDict, *, steps_per_epoch: int, num_epochs: int
) -> optax.Schedule | float:
  """The schedule of `config.schedule` (see the module docstring); `num_epochs` is the run's."""
  if config.schedule == "constant":
    return config.lr
  if config.schedule == "epoch_decay":

    def schedule(count):
      epoch = (count // steps_per_epoch).astype(jnp.float32)
      return config.lr * config.lr_decay ** (epoch / config.lr_decay_epochs)

    return schedule
  total = max(num_epochs * steps_per_epoch, 1)
  warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
  return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup_steps=warmup, decay_steps=total)


def make_optimizer(
  config: ml_collections.ConfigDict,
  *,
  steps_per_epoch: int,
  num_epochs: int,
  path: str = "config.optim",
) -> optax.GradientTransformation:
  """The optax chain of an `optim` config group (see the module docstring).

  Args:
    config: the group (`config.optim` or `config.stage1.optim`).
    steps_per_epoch: optimiser steps in one epoch.
    num_epochs: the epochs the run trains (the cosine schedule ends there).
    path: the group's place in the config, for error messages.
  """
  check_config(config, path=path)
  parts = []
  if config.clip_norm:
    parts.append(optax.clip_by_global_norm(config.clip_norm))
  parts.append(optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps))
  if config.name == "adamw":
    parts.append(optax.add_decayed_weights(config.weight_decay))
  parts.append(
    optax.scale_by_learning_rate(
      learning_rate(config, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs)
    )
  )
  return optax.chain(*parts)
