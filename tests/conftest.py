"""Shared fixtures: a tiny configuration that trains in seconds, the shared data folder."""

import pathlib

import pytest

from configs import default

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_config(**overrides):
  """The default config on a ~100-user synthetic dataset, small batches, few epochs."""
  config = default.get_config()
  config.data.synthetic.num_users = 120
  config.data.synthetic.num_items = 80
  config.data.synthetic.mean_user_interactions = 12
  config.data.synthetic.modality_dims = (("image_feat", 24), ("text_feat", 16))
  config.train.batch_size = 256
  config.train.max_epochs = 3
  config.eval.chunk_size = 64
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


@pytest.fixture
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f"the shared datasets folder {SHARED_DATA} is absent")
  return SHARED_DATA
