"""Shared fixtures: a tiny configuration that trains in seconds, the shared data folder."""

import os
import pathlib
import tempfile

import jax
import pytest

from configs import default

# XLA's persistent compilation cache, shared by this session's tests and the launchers they start
# as subprocesses: many tests compile the same tiny programs, and compiling dominates their time.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="alignrec-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

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
  config.stage1.width = 16
  config.stage1.num_heads = 2
  config.stage1.num_layers = 1
  config.stage1.output_dim = 12
  config.stage1.batch_size = 32
  config.stage1.encode_batch_size = 64
  config.stage1.epochs = 2
  config.stage1.warmup_epochs = 1
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


@pytest.fixture
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f"the shared datasets folder {SHARED_DATA} is absent")
  return SHARED_DATA
