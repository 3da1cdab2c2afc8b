"""Text features: the all-MiniLM-L6-v2 sentence encoder in Flax, its weights and tokenizer."""

from alignrec_jax.text.assets import AssetError, MiniLMFiles, default_cache_dir, fetch_minilm
from alignrec_jax.text.minilm import (
    BertConfig,
    BertLayer,
    BertModel,
    MiniLMEncoder,
    WeightsError,
    l2_normalize,
    load_bert,
    load_item_texts,
    load_tokenizer,
    mean_pool,
    params_from_tensors,
    plan_batches,
    space_after_commas,
)
from alignrec_jax.text.safetensors_io import SafetensorsError, read_header, read_safetensors

__all__ = [
    "AssetError",
    "BertConfig",
    "BertLayer",
    "BertModel",
    "MiniLMEncoder",
    "MiniLMFiles",
    "SafetensorsError",
    "WeightsError",
    "default_cache_dir",
    "fetch_minilm",
    "l2_normalize",
    "load_bert",
    "load_item_texts",
    "load_tokenizer",
    "mean_pool",
    "params_from_tensors",
    "plan_batches",
    "read_header",
    "read_safetensors",
    "space_after_commas",
]
