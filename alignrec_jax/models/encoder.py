"""AlignRec's stage 1 (inter-content alignment): a cross-modal transformer over item content.

The paper fine-tunes BEiT-3 on image-text pairs and takes its CLS output as the item's multimodal
feature. The authors released neither code nor checkpoint, so this is a small pure-Flax stand-in
that takes any number of modalities, each described by a `ModalitySpec`:

- "sequence": continuous token states [B, L, D] with a bool mask [B, L] (e.g. MiniLM states);
- "categorical": token ids [B, L] int32, -1 marking padding (e.g. tags, genres);
- "vector": one global feature [B, D] (e.g. a CNN image feature), projected into `num_tokens`
  tokens so that attention can mix parts of it with the other modalities' tokens.

Every modality's tokens get a modality-type embedding and learned position embeddings, a CLS token
is prepended, and pre-LN transformer blocks run over the concatenation with a key mask that hides
padding and absent modalities. The item vector is the CLS output projected to `output_dim`
(`output="cls"`, the paper's), or that vector beside the pretrained inputs' own vectors
(`output="anchored"`, see `CrossModalEncoder.item_features`).

Its pre-training objective (`pretrain_loss`, below) follows BEiT-3's spirit on our modalities:

- masked modelling: a random fraction of each modality's real tokens is replaced by a learned
  [MASK] embedding and reconstructed from the rest (including the other modalities) by
  per-modality heads: softmax cross-entropy over the vocabulary for "categorical" tokens, mean
  squared error for "sequence" and "vector" tokens;
- contrastive alignment (image-text contrast): the encoder runs on each modality alone, and the
  single-modality CLS vectors of the same item are pulled together with a symmetric InfoNCE;
- fused alignment: the CLS of the masked-modelling pass (all modalities, partly masked) is
  contrasted with each single-modality CLS of the same item (symmetric InfoNCE, averaged over
  the modalities). The other terms shape the fused CLS, the vector stage 2 reads, only
  indirectly; this one trains it to be the consensus of the modalities, robust to masked
  content (its measured effect: docs/results.md); weight 0 switches it off.

Regression target: the RAW input, layer-normalised per token (zero mean, unit variance over its D
features; no learned parameters), as MAE does with normalised pixels. A target built from the
model's own input embedding (even under stop-gradient) can collapse towards a constant that the
heads predict trivially; the raw features cannot move. Normalising makes the loss independent of
each modality's scale (lfm2k's VGGish rows have norm ~1,470, text rows norm 1) so one weight per
kind fits all. A "vector" input is a single feature projected into `num_tokens` tokens, each a
learned mix of all D values, so every masked vector token regresses the whole normalised vector.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from alignrec_jax import schema
from alignrec_jax.data.content import ModalityInput, ModalitySpec, token_mask
from alignrec_jax.normalize import l2_normalize, standardize
from alignrec_jax.objectives.losses import info_nce

Inputs = Mapping[str, ModalityInput]

OUTPUTS = ("cls", "anchored")

# BEiT-style small normal init for the learned tokens and tables: keeps the embedding sum of
# type + position + content at the scale of the projected content at the start.
_embed_init = nn.initializers.truncated_normal(0.02)
# Added to the attention logits of hidden keys. Finite (not -inf) so that a fully hidden row could
# never produce NaN; in practice every row sees at least the CLS key.
_MASK_LOGIT = -1e9


class SelfAttention(nn.Module):
  """Multi-head self-attention with a key mask. [B, T, W] -> [B, T, W]."""

  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    """x [B, T, W]; key_mask [B, T] bool, False keys receive no attention from any query."""
    batch, length, width = x.shape
    if width % self.num_heads:
      raise ValueError(f"width {width} not divisible by {self.num_heads} heads")
    head_dim = width // self.num_heads

    def split(t):  # [B, T, W] -> [B, H, T, W / H]
      return t.reshape(batch, length, self.num_heads, head_dim).transpose(0, 2, 1, 3)

    q = split(nn.Dense(width, name="query")(x))
    k = split(nn.Dense(width, name="key")(x))
    v = split(nn.Dense(width, name="value")(x))
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(jnp.float32(head_dim))
    logits = jnp.where(key_mask[:, None, None, :], logits, _MASK_LOGIT)
    weights = jax.nn.softmax(logits, axis=-1)
    heads = jnp.einsum("bhqk,bhkd->bhqd", weights, v)
    merged = heads.transpose(0, 2, 1, 3).reshape(batch, length, width)
    return nn.Dense(width, name="out")(merged)


class TransformerBlock(nn.Module):
  """Pre-LN block: x + Attn(LN(x)), then + MLP(LN(.)) with exact (erf) GELU. [B, T, W]."""

  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = x + SelfAttention(self.num_heads, name="attention")(
      nn.LayerNorm(name="ln_attn")(x), key_mask
    )
    h = nn.Dense(self.mlp_dim, name="mlp_in")(nn.LayerNorm(name="ln_mlp")(x))
    h = nn.gelu(h, approximate=False)
    return x + nn.Dense(width, name="mlp_out")(h)


class CrossModalEncoder(nn.Module):
  """Fuses an item's modalities into one vector (the CLS output), BEiT-3 style.

  Attributes:
    specs: one `ModalitySpec` per modality; the token order is the order of `specs`.
    width: the transformer width W.
    num_heads: attention heads (W must be divisible by it).
    num_layers: transformer blocks.
    mlp_dim: hidden size of the blocks' MLP (0: 4 W).
    output_dim: the size of the CLS vector (768 like BEiT-3 base by default).
    output: what `item_features` returns: "cls" (the CLS vector) or "anchored" (see there).
  """

  specs: tuple[ModalitySpec, ...]
  width: int = schema.field(128, "the transformer width W", schema.POSITIVE_INT)
  num_heads: int = schema.field(
    4, "attention heads (W must be divisible by them)", schema.POSITIVE_INT
  )
  num_layers: int = schema.field(2, "transformer blocks", schema.NONNEGATIVE_INT)
  mlp_dim: int = schema.field(0, "hidden size of the blocks' MLP (0: 4 W)", schema.NONNEGATIVE_INT)
  output_dim: int = schema.field(
    768, "the size of the CLS vector (BEiT-3 base: 768)", schema.POSITIVE_INT
  )
  output: str = schema.field(
    "cls",
    "the item features stage 2 reads: cls (the CLS vector, the paper's) or anchored (each "
    "pretrained input's own vector beside it; see item_features)",
    schema.one_of(*OUTPUTS),
  )

  @property
  def anchors(self) -> tuple[ModalitySpec, ...]:
    """The modalities whose inputs are pretrained vectors: "sequence" and "vector" ones."""
    return tuple(s for s in self.specs if s.kind != "categorical")

  @property
  def feature_dim(self) -> int:
    """The size of `item_features`' vectors."""
    if self.output == "cls":
      return self.output_dim
    return self.output_dim + sum(s.input_dim for s in self.anchors)

  def item_features(self, inputs: Mapping[str, ModalityInput]) -> jax.Array:
    """[B, feature_dim]: the item vectors stage 2 reads.

    "cls": the CLS vector. "anchored": each pretrained input's own vector (a "sequence": the
    mean of its real token states, i.e. MiniLM's sentence embedding; a "vector": itself; zeros
    where the modality is absent), then the CLS vector, each L2-normalised, concatenated. A
    small encoder trained from scratch on a few thousand items can lose what the pretrained
    inputs carry; anchored, it can only add to them (its measured effect: docs/results.md).
    Categorical tokens are learned from scratch and reach the output through the CLS only.
    """
    cls, _ = self(inputs)
    if self.output == "cls":
      return cls
    pieces = []
    for spec in self.anchors:
      inp = inputs[spec.name]
      valid = token_mask(spec, inp)  # [B, L]; a "vector" row: all True or all False
      if spec.kind == "sequence":
        total = jnp.sum(jnp.where(valid[..., None], inp.values, 0.0), axis=1)
        vector = total / jnp.maximum(jnp.sum(valid, axis=1, keepdims=True), 1)
      else:
        vector = jnp.where(valid[:, :1], inp.values, 0.0)
      pieces.append(l2_normalize(vector.astype(jnp.float32)))
    return jnp.concatenate([*pieces, l2_normalize(cls)], axis=-1)

  def _embed(
    self, spec: ModalitySpec, inp: ModalityInput, valid: jax.Array, masked: jax.Array | None
  ) -> jax.Array:
    """[B, L_m, W] token embeddings of one modality, zero on hidden positions."""
    if spec.kind == "sequence":
      # Zeroing hidden positions first keeps arbitrary (even non-finite) padding values out of
      # every computation, forward and backward.
      values = jnp.where(valid[..., None], inp.values, 0.0)
      tokens = nn.Dense(self.width, name=f"{spec.name}_proj")(values)
    elif spec.kind == "categorical":
      ids = jnp.where(valid, inp.values, 0)
      tokens = nn.Embed(
        spec.vocab_size, self.width, embedding_init=_embed_init, name=f"{spec.name}_embed"
      )(ids)
    else:
      present = valid[:, 0]
      values = jnp.where(present[:, None], inp.values, 0.0)
      flat = nn.Dense(spec.num_tokens * self.width, name=f"{spec.name}_proj")(values)
      tokens = flat.reshape(values.shape[0], spec.num_tokens, self.width)
    length = tokens.shape[1]
    if spec.kind != "vector" and length > spec.max_len:
      raise ValueError(f"modality {spec.name!r}: {length} tokens > max_len {spec.max_len}")
    mask_token = self.param(f"{spec.name}_mask_token", _embed_init, (self.width,))
    if masked is not None:
      # BEiT: the masked token's content is replaced; its type and position embeddings stay so
      # the model knows what to reconstruct where.
      tokens = jnp.where(masked[..., None], mask_token, tokens)
    max_len = spec.num_tokens if spec.kind == "vector" else spec.max_len
    positions = self.param(f"{spec.name}_pos", _embed_init, (max_len, self.width))
    type_embedding = self.param(f"{spec.name}_type", _embed_init, (self.width,))
    tokens = tokens + positions[:length] + type_embedding
    return jnp.where(valid[..., None], tokens, 0.0)

  @nn.compact
  def __call__(
    self,
    inputs: Mapping[str, ModalityInput],
    masked: Mapping[str, jax.Array] | None = None,
    with_heads: bool = False,
    only: str | None = None,
  ):
    """Encodes a batch of items.

    Args:
      inputs: name -> `ModalityInput`, every spec's name present, same batch size B.
      masked: optional name -> [B, L_m] bool, positions whose content is replaced by that
        modality's learned [MASK] embedding (pre-training); hidden positions are ignored.
      with_heads: also return the reconstruction heads' predictions (pre-training).
      only: encode this modality alone: the sequence is CLS plus its tokens only. Equal to
        encoding `with_only(inputs, only)` (the other modalities' keys are hidden there), but
        without computing their tokens: the contrastive views of pre-training use it.

    Returns:
      cls: [B, output_dim] the item vectors;
      tokens: name -> [B, L_m, W] final (layer-normed) token outputs;
      and, with `with_heads`, predictions: name -> [B, L_m, D] ("sequence", "vector": regression
      of the layer-normed raw input) or [B, L_m, vocab_size] logits ("categorical").
    """
    if self.output not in OUTPUTS:
      raise ValueError(f"output {self.output!r}: expected one of {OUTPUTS}")
    masked = masked or {}
    specs = self.specs
    if only is not None:
      specs = tuple(s for s in self.specs if s.name == only)
      if not specs or self.is_initializing():
        raise ValueError(
          f"only={only!r}: not one of {[s.name for s in self.specs]} (or used "
          "at init, which must create every modality's parameters)"
        )
    pieces, valids, lengths = [], [], []
    for spec in specs:
      inp = inputs[spec.name]
      valid = token_mask(spec, inp)
      pieces.append(self._embed(spec, inp, valid, masked.get(spec.name)))
      valids.append(valid)
      lengths.append(pieces[-1].shape[1])
    batch = pieces[0].shape[0]
    cls_token = self.param("cls_token", _embed_init, (self.width,))
    x = jnp.concatenate([jnp.broadcast_to(cls_token, (batch, 1, self.width))] + pieces, axis=1)
    key_mask = jnp.concatenate([jnp.ones((batch, 1), bool)] + valids, axis=1)
    mlp_dim = self.mlp_dim or 4 * self.width
    for i in range(self.num_layers):
      x = TransformerBlock(self.num_heads, mlp_dim, name=f"block_{i}")(x, key_mask)
    x = nn.LayerNorm(name="ln_final")(x)
    cls = nn.Dense(self.output_dim, name="cls_proj")(x[:, 0])
    tokens, start = {}, 1
    for spec, length in zip(specs, lengths, strict=True):
      tokens[spec.name] = x[:, start : start + length]
      start += length
    # Heads are created at init even when not asked for, so that one parameter tree serves
    # both encoding and pre-training.
    if not (with_heads or self.is_initializing()):
      return cls, tokens
    predictions = {}
    for spec in specs:
      size = spec.vocab_size if spec.kind == "categorical" else spec.input_dim
      predictions[spec.name] = nn.Dense(size, name=f"{spec.name}_head")(tokens[spec.name])
    return (cls, tokens, predictions) if with_heads else (cls, tokens)


# ----------------------------------------------------------------------------- pre-training


@dataclasses.dataclass(frozen=True)
class Tokens:
  """How a "vector" modality enters the encoder."""

  vector_tokens: int = schema.field(
    4, "tokens a vector modality (e.g. a CNN image feature) is projected into", schema.POSITIVE_INT
  )


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """The pre-training terms' weights."""

  sequence: float = schema.field(1.0, "masked modelling of sequence tokens", schema.NONNEGATIVE)
  categorical: float = schema.field(
    1.0, "masked modelling of categorical tokens", schema.NONNEGATIVE
  )
  vector: float = schema.field(1.0, "masked modelling of vector tokens", schema.NONNEGATIVE)
  contrastive: float = schema.field(
    1.0, "contrast between the single-modality CLS vectors", schema.NONNEGATIVE
  )
  fused: float = schema.field(
    1.0, "contrast of the fused CLS with each single-modality CLS (0: off)", schema.NONNEGATIVE
  )


@dataclasses.dataclass(frozen=True)
class PretrainLoss:
  """Stage 1's objective: masking, contrast and the terms' weights."""

  mask_fraction: float = schema.field(
    0.4, "fraction of each modality's real tokens masked", schema.OPEN_FRACTION
  )
  temperature: float = schema.field(0.07, "the InfoNCE temperature", schema.POSITIVE)
  weights: LossWeights = schema.field(LossWeights, "the terms' weights")


DEFAULT_WEIGHTS: dict[str, float] = dataclasses.asdict(LossWeights())


def config_group() -> schema.Group:
  """`config.stage1.model`: the encoder's fields and the vector modalities' token count."""
  fields = {
    **schema.group_of(CrossModalEncoder, skip=("specs",)).fields,
    **schema.group_of(Tokens).fields,
  }
  return schema.Group("the cross-modal encoder", fields)


def sample_masks(
  key: jax.Array,
  inputs: Inputs,
  specs: Sequence[ModalitySpec],
  mask_fraction: float | Mapping[str, float],
) -> dict[str, jax.Array]:
  """Random positions to mask: name -> [B, L_m] bool.

  Per item and modality with n real tokens, k = floor(fraction * n + u), u ~ U[0, 1), tokens are
  masked (stochastic rounding, so E[k] = fraction * n exactly), at least one when n > 0, chosen
  uniformly among the real tokens; padding and absent modalities are never masked.

  Args:
    key: PRNG key.
    inputs: name -> `ModalityInput` with batch size B.
    specs: the encoder's modality specs.
    mask_fraction: one fraction for all modalities, or name -> fraction.
  """
  masks = {}
  for spec, spec_key in zip(specs, jax.random.split(key, len(specs)), strict=True):
    inp = inputs[spec.name]
    fraction = mask_fraction[spec.name] if isinstance(mask_fraction, Mapping) else mask_fraction
    valid = token_mask(spec, inp)  # [B, L]
    batch, length = valid.shape
    score_key, round_key = jax.random.split(spec_key)
    scores = jnp.where(valid, jax.random.uniform(score_key, (batch, length)), 2.0)
    # rank of each position among its row's scores; real tokens take ranks 0..n-1.
    ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
    count = jnp.sum(valid, axis=1)
    k = jnp.floor(fraction * count + jax.random.uniform(round_key, (batch,)))
    k = jnp.where(count > 0, jnp.clip(k, 1, count), 0)
    masks[spec.name] = valid & (ranks < k[:, None])
  return masks


def regression_target(spec: ModalitySpec, inp: ModalityInput) -> jax.Array:
  """[B, L_m, D]: the layer-normalised raw input of each token (see the module docstring)."""
  values = inp.values.astype(jnp.float32)
  if spec.kind == "vector":
    values = jnp.broadcast_to(
      values[:, None, :], (values.shape[0], spec.num_tokens, values.shape[1])
    )
  return standardize(values)


def _masked_token_loss(
  spec: ModalitySpec, inp: ModalityInput, prediction: jax.Array, masked: jax.Array
) -> jax.Array:
  """Mean reconstruction loss over the real masked tokens (0 when there are none)."""
  weight = (masked & token_mask(spec, inp)).astype(jnp.float32)  # [B, L]
  if spec.kind == "categorical":
    ids = jnp.where(inp.values >= 0, inp.values, 0)
    per_token = optax.softmax_cross_entropy_with_integer_labels(prediction, ids)
  else:
    # Hidden positions may hold anything (even NaN): select before squaring.
    target = jnp.where(weight[..., None] > 0, regression_target(spec, inp), 0.0)
    per_token = jnp.mean(jnp.square(prediction - target), axis=-1)
  per_token = jnp.where(weight > 0, per_token, 0.0)
  return jnp.sum(per_token) / jnp.maximum(jnp.sum(weight), 1.0)


def symmetric_info_nce(
  a: jax.Array, b: jax.Array, *, temperature: float, mask: jax.Array
) -> jax.Array:
  """0.5 (InfoNCE(a -> b) + InfoNCE(b -> a)): CLIP's image-text contrast. a, b [B, d]; mask [B]."""
  return 0.5 * (
    info_nce(anchors=a, positives=b, temperature=temperature, mask=mask)
    + info_nce(anchors=b, positives=a, temperature=temperature, mask=mask)
  )


def pretrain_loss(
  params,
  module: CrossModalEncoder,
  inputs: Inputs,
  key: jax.Array,
  *,
  weights: Mapping[str, float] | None = None,
  mask_fraction: float = 0.4,
  temperature: float = 0.07,
  pairs: Sequence[tuple[str, str]] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The stage-1 objective on one batch.

  Args:
    params: the encoder's parameters (`module.init(...)["params"]`).
    module: the encoder.
    inputs: name -> `ModalityInput`, batch size B.
    key: PRNG key for the masks.
    weights: "sequence", "categorical", "vector" (masked modelling, per kind), "contrastive" and
      "fused"; missing keys take `DEFAULT_WEIGHTS`.
    mask_fraction: the fraction of real tokens masked per modality.
    temperature: the InfoNCE temperature.
    pairs: the modality pairs contrasted; default every pair (none with one modality).

  Returns:
    (loss, terms) with terms "mlm/<name>" per modality, "contrastive" (with two or more
    modalities), "fused" (when weighted) and "loss" (unweighted terms, weighted total).
  """
  weights = {**DEFAULT_WEIGHTS, **(weights or {})}
  specs = module.specs
  masks = sample_masks(key, inputs, specs, mask_fraction)
  variables = {"params": params}
  fused, _, predictions = module.apply(variables, inputs, masks, with_heads=True)
  terms, loss = {}, jnp.float32(0.0)
  for spec in specs:
    term = _masked_token_loss(spec, inputs[spec.name], predictions[spec.name], masks[spec.name])
    terms[f"mlm/{spec.name}"] = term
    loss = loss + weights[spec.kind] * term
  if pairs is None:
    pairs = list(itertools.combinations([s.name for s in specs], 2))
  names = sorted({n for pair in pairs for n in pair})
  if weights["fused"]:
    names = [s.name for s in specs]
  if names:
    spec_by_name = {s.name: s for s in specs}
    # Each single-modality view runs over that modality's tokens only (`only`), not over all
    # tokens with the others hidden: on ml100k the genre view is 7 tokens instead of 40.
    alone, has = {}, {}
    for name in names:
      alone[name], _ = module.apply(variables, inputs, only=name)
      # An item whose modality has no real token is encoded as CLS alone: not a real view.
      has[name] = jnp.any(token_mask(spec_by_name[name], inputs[name]), axis=1)
  if pairs:
    contrastive = jnp.float32(0.0)
    for a, b in pairs:
      mask = (has[a] & has[b]).astype(jnp.float32)
      contrastive = contrastive + symmetric_info_nce(
        alone[a], alone[b], temperature=temperature, mask=mask
      )
    terms["contrastive"] = contrastive / len(pairs)
    loss = loss + weights["contrastive"] * terms["contrastive"]
  if weights["fused"]:
    total = jnp.float32(0.0)
    for name in names:
      total = total + symmetric_info_nce(
        fused, alone[name], temperature=temperature, mask=has[name].astype(jnp.float32)
      )
    terms["fused"] = total / len(names)
    loss = loss + weights["fused"] * terms["fused"]
  terms["loss"] = loss
  return loss, terms
