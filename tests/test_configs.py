"""Every config loads, and those of the shared datasets point at folders that load."""

import importlib
import pathlib

import pytest

from alignrec_jax.experiment import load_dataset

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")
                 if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_is_complete(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  for section in ("data", "model", "loss", "optim", "train", "eval"):
    assert section in config, section
  assert config.model.name in ("alignrec", "lightgcn")
  assert config.train.select_metric.split("@")[0] in ("recall", "ndcg", "precision", "map")


def _config(name):
  return importlib.import_module(f"configs.{name}").get_config()


# Configs of the datasets in ../shared/data (the others generate or download theirs).
SHARED_CONFIGS = [n for n in CONFIGS if _config(n).data.name not in ("synthetic", "ml100k")]


def test_stage1_modalities_pair_with_feature_files():
  """launch.feature_quality pairs raw feature files with stage-1 modalities by position."""
  for name in CONFIGS:
    config = _config(name)
    if config.stage1.modalities and not config.data.synthetic_feature_dim:
      assert len(config.stage1.modalities) == len(config.data.features), name


@pytest.mark.parametrize("name", SHARED_CONFIGS)
def test_shared_dataset_configs_load(name, shared_data, tmp_path):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert pathlib.Path(config.data.path).parent == shared_data
  dataset = load_dataset(config.data, str(tmp_path))
  assert len(dataset.train) > 0 and dataset.num_items > 0
