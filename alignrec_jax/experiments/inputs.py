"""An experiment's feature inputs: which item-feature files a stage-2 run reads, by name.

"raw" is every raw feature file of the config (combined as `config.data` says), "stage1" the
stage-1 features (trained first when needed), and a stage-1 modality's name its paired raw
feature file alone: the config's `data.features` and `stage1.data.modalities` pair by position
(ml100k: text_feat.npy <-> text, genre_feat.npy <-> genre).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections

from alignrec_jax.data import content as content_lib
from alignrec_jax.data import load_mmrec
from alignrec_jax.errors import ConfigError
from alignrec_jax.training import stage1
from alignrec_jax.training.stage2_setup import dataset_folder


def paired_modalities(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(raw feature file, stage-1 modality name) pairs, by position in the config."""
  feature_files = list(config.data.features)
  names = [name for name, _, _ in content_lib.parse_modalities(config.stage1.data.modalities)]
  if len(feature_files) != len(names):
    raise ConfigError(
      f"config.data.features {feature_files} and config.stage1.data.modalities "
      f"{names} must pair up one to one (by position) for the robustness check"
    )
  return list(zip(feature_files, names, strict=True))


def check_input_names(
  config: ml_collections.ConfigDict, names: Sequence[str], *, field: str
) -> None:
  """Raises ConfigError unless every name is an input `feature_inputs` knows (see there).

  Runs before any data is read; `field` names where the names came from, for the message.
  """
  unknown = [name for name in names if name not in ("raw", "stage1")]
  if not unknown:
    return
  try:
    modalities = [name for _, name in paired_modalities(config)]
  except ConfigError as e:
    raise ConfigError(f"{field}: input {unknown[0]!r} needs paired modalities: {e}") from None
  for name in unknown:
    if name not in modalities:
      raise ConfigError(
        f"{field}: unknown input {name!r}; expected raw, stage1 or one of {modalities}"
      )


def feature_inputs(
  config: ml_collections.ConfigDict,
  workdir: str,
  names: Sequence[str],
  *,
  stage1_features: str | None = None,
) -> dict[str, list[str]]:
  """Feature files of each named input, absolute.

  Args:
    config: the experiment config.
    workdir: the sweep's folder (stage 1 trains under it for input "stage1").
    names: "raw" (every raw feature file, combined as the config says), "stage1" (the stage-1
      features) or a stage-1 modality name (its paired raw feature file alone: the config's
      `data.features` and `stage1.data.modalities` pair by position).
    stage1_features: the stage-1 feature file to use instead of training stage 1.
  """
  check_input_names(config, names, field="inputs")
  folder = dataset_folder(config.data, workdir)
  raw = [os.path.abspath(os.path.join(folder, f)) for f in config.data.features]
  out = {}
  for name in names:
    if name == "raw":
      out[name] = raw
    elif name == "stage1":
      path = stage1_features or stage1.run_stage1(
        config.stage1, folder, workdir, num_items=load_mmrec(folder).num_items, seed=config.seed
      )
      out[name] = [os.path.abspath(path)]
    else:
      paired = dict((m, f) for f, m in paired_modalities(config))
      out[name] = [os.path.abspath(os.path.join(folder, paired[name]))]
  return out
