"""The experiment config as a whole: every group, each declared beside the code that reads it.

    config = default_config()   # what configs/default.py returns

| group | declared in |
|---|---|
| seed, train | training/stage2.py |
| data, eval, model (name, kernel, knn_search, knn_probes) | training/stage2_setup.py |
| model.<name> (module fields, options, loss) | that model's file in models/ |
| optim | training/optimizer.py |
| parallel | training/parallel.py |
| pipeline | experiments/pipeline.py |
| stage1 (data, model, loss, optim, train) | training/stage1.py, data/content.py, models/encoder.py|

`rows()` lists every field with its default and one-line meaning.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from alignrec_jax import schema
from alignrec_jax.experiments import pipeline
from alignrec_jax.training import stage1, stage2


def config_group() -> schema.Group:
  """The whole experiment config's schema (every registered model's group included)."""
  return schema.Group(
    "an experiment: stage 2, the pipeline and stage 1",
    {
      **stage2.config_group().fields,
      "pipeline": pipeline.GROUP,
      "stage1": stage1.config_group(),
    },
  )


def default_config() -> ml_collections.ConfigDict:
  """AlignRec at the reference settings, both stages, on the built-in synthetic data."""
  return schema.config_dict(config_group())


def check(config: ml_collections.ConfigDict) -> None:
  """ConfigError for any field of the whole config that nothing reads, is missing or out of
  range (each reader checks its part; this checks them all, stage 1's too)."""
  stage2.check_config(config)
  pipeline.check_config(config)
  stage1.check_config(config.stage1)


def rows() -> list[tuple[str, Any, str]]:
  """(dotted field, default, meaning) of every field."""
  return schema.rows(config_group())
