"""Stage 1's objective: masked modelling and contrast between the item's modalities.

The objective follows BEiT-3's spirit on our modalities:

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
  content (its measured effect: benchmarks/README.md); weight 0 switches it off.

Regression target: the RAW input, layer-normalised per token (zero mean, unit variance over its D
features; no learned parameters), as MAE does with normalised pixels. A target built from the
model's own input embedding (even under stop-gradient) can collapse towards a constant that the
heads predict trivially; the raw features cannot move. Normalising makes the loss independent of
each modality's scale (lfm2k's VGGish rows have norm ~1,470, text rows norm 1) so one weight per
kind fits all. A "vector" input is a single feature projected into `num_tokens` tokens, each a
learned mix of all D values, so every masked vector token regresses the whole normalised vector.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from alignrec_jax.data.content import ModalityInput, ModalitySpec, token_mask
from alignrec_jax.models.encoder import CrossModalEncoder
from alignrec_jax.normalize import standardize
from alignrec_jax.objectives.losses import info_nce

Inputs = Mapping[str, ModalityInput]

DEFAULT_WEIGHTS: dict[str, float] = {
  "sequence": 1.0,
  "categorical": 1.0,
  "vector": 1.0,
  "contrastive": 1.0,
  "fused": 1.0,
}


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
