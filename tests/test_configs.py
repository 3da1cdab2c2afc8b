"""Every config loads and passes validation, and those of the shared datasets point at folders
that load."""

import importlib
import pathlib

import pytest

from alignrec_jax.experiments import pipeline
from alignrec_jax.training import stage1, stage2, stage2_setup

CONFIGS = sorted(
  p.stem
  for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")
  if p.stem != "__init__"
)


def _config(name):
  return importlib.import_module(f"configs.{name}").get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_every_field_is_read(name):
  config = _config(name)
  stage2.check_config(config)
  if config.stage1.data.modalities:  # synthetic-baby's feature file stands in for stage 1
    stage1.check_config(config.stage1)
  pipeline.check_config(config)
  assert set(config) == {
    "seed",
    "data",
    "model",
    "optim",
    "train",
    "eval",
    "parallel",
    "pipeline",
    "stage1",
  }


# Configs of the datasets in ../shared/data (the others generate or download theirs).
SHARED_CONFIGS = [n for n in CONFIGS if _config(n).data.name not in ("synthetic", "ml100k")]


def test_stage1_modalities_pair_with_feature_files():
  """launch.feature_quality pairs raw feature files with stage-1 modalities by position."""
  for name in CONFIGS:
    config = _config(name)
    if config.stage1.data.modalities and not config.data.synthetic_feature_dim:
      assert len(config.stage1.data.modalities) == len(config.data.features), name


@pytest.mark.parametrize("name", SHARED_CONFIGS)
def test_shared_dataset_configs_load(name, shared_data, tmp_path):
  config = _config(name)
  assert pathlib.Path(config.data.path).parent == shared_data
  dataset = stage2_setup.load_dataset(config.data, str(tmp_path))
  assert len(dataset.train) > 0 and dataset.num_items > 0
