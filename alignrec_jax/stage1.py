"""Stage-1 pre-training of the cross-modal encoder and the item features it produces.

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
  content. On ml100k it raised the item-kNN test Recall@20 of the features from 0.035 to 0.043
  and stage 2's from 0.141 to 0.146 (benchmarks/README.md); weight 0 switches it off.

Regression target: the RAW input, layer-normalised per token (zero mean, unit variance over its D
features; no learned parameters), as MAE does with normalised pixels. A target built from the
model's own input embedding (even under stop-gradient) can collapse towards a constant that the
heads predict trivially; the raw features cannot move. Normalising makes the loss independent of
each modality's scale (lfm2k's VGGish rows have norm ~1,470, text rows norm 1) so one weight per
kind fits all. A "vector" input is a single feature projected into `num_tokens` tokens, each a
learned mix of all D values, so every masked vector token regresses the whole normalised vector.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignrec_jax.losses import info_nce
from alignrec_jax.models.fusion import (
  CrossModalEncoder,
  ModalityInput,
  ModalitySpec,
  token_mask,
)

Inputs = Mapping[str, ModalityInput]

DEFAULT_WEIGHTS: dict[str, float] = {
  "sequence": 1.0, "categorical": 1.0, "vector": 1.0, "contrastive": 1.0, "fused": 1.0}
_TARGET_EPS = 1e-6


def sample_masks(key: jax.Array, inputs: Inputs, specs: Sequence[ModalitySpec],
                 mask_fraction: float | Mapping[str, float]) -> dict[str, jax.Array]:
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
    fraction = (mask_fraction[spec.name] if isinstance(mask_fraction, Mapping)
                else mask_fraction)
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
    values = jnp.broadcast_to(values[:, None, :], (values.shape[0], spec.num_tokens,
                                                   values.shape[1]))
  mean = jnp.mean(values, axis=-1, keepdims=True)
  var = jnp.var(values, axis=-1, keepdims=True)
  return (values - mean) / jnp.sqrt(var + _TARGET_EPS)


def _masked_token_loss(spec: ModalitySpec, inp: ModalityInput, prediction: jax.Array,
                       masked: jax.Array) -> jax.Array:
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


def symmetric_info_nce(a: jax.Array, b: jax.Array, *, temperature: float,
                       mask: jax.Array) -> jax.Array:
  """0.5 (InfoNCE(a -> b) + InfoNCE(b -> a)): CLIP's image-text contrast. a, b [B, d]; mask [B]."""
  return 0.5 * (info_nce(anchors=a, positives=b, temperature=temperature, mask=mask)
                + info_nce(anchors=b, positives=a, temperature=temperature, mask=mask))


def pretrain_loss(params, module: CrossModalEncoder, inputs: Inputs, key: jax.Array, *,
                  weights: Mapping[str, float] | None = None, mask_fraction: float = 0.4,
                  temperature: float = 0.07,
                  pairs: Sequence[tuple[str, str]] | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The stage-1 objective on one batch.

  Args:
    params: the encoder's variables ({"params": ...}).
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
  fused, _, predictions = module.apply(params, inputs, masks, with_heads=True)
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
      alone[name], _ = module.apply(params, inputs, only=name)
      # An item whose modality has no real token is encoded as CLS alone: not a real view.
      has[name] = jnp.any(token_mask(spec_by_name[name], inputs[name]), axis=1)
  if pairs:
    contrastive = jnp.float32(0.0)
    for a, b in pairs:
      mask = (has[a] & has[b]).astype(jnp.float32)
      contrastive = contrastive + symmetric_info_nce(alone[a], alone[b], temperature=temperature,
                                                     mask=mask)
    terms["contrastive"] = contrastive / len(pairs)
    loss = loss + weights["contrastive"] * terms["contrastive"]
  if weights["fused"]:
    total = jnp.float32(0.0)
    for name in names:
      total = total + symmetric_info_nce(fused, alone[name], temperature=temperature,
                                         mask=has[name].astype(jnp.float32))
    terms["fused"] = total / len(names)
    loss = loss + weights["fused"] * terms["fused"]
  terms["loss"] = loss
  return loss, terms


@flax.struct.dataclass
class PretrainState:
  """The carried state of stage-1 training: a pytree (jit argument, lax.scan carry)."""

  step: jax.Array
  params: dict
  opt_state: optax.OptState


def init_state(module: CrossModalEncoder, optimizer: optax.GradientTransformation,
               example_inputs: Inputs, key: jax.Array) -> PretrainState:
  """Fresh parameters (heads included) and optimiser state."""
  # Under jit: eager initialisation dispatches every op separately and is many times slower.
  params = jax.jit(module.init)(key, example_inputs)
  return PretrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=optimizer.init(params))


def make_train_step(module: CrossModalEncoder, optimizer: optax.GradientTransformation, *,
                    weights: Mapping[str, float] | None = None, mask_fraction: float = 0.4,
                    temperature: float = 0.07, pairs: Sequence[tuple[str, str]] | None = None
                    ) -> Callable[[PretrainState, Inputs, jax.Array],
                                  tuple[PretrainState, dict[str, jax.Array]]]:
  """A pure `(state, batch, key) -> (state, terms)`: wrap in jax.jit, or scan over batches.

  Only hyper-parameters are closed over; parameters and data come in as arguments, so nothing
  large is folded into the compiled program.
  """
  loss_fn = functools.partial(pretrain_loss, module=module, weights=weights,
                              mask_fraction=mask_fraction, temperature=temperature, pairs=pairs)

  def step(state: PretrainState, batch: Inputs, key: jax.Array):
    grads, terms = jax.grad(lambda p: loss_fn(p, inputs=batch, key=key), has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return PretrainState(step=state.step + 1, params=params, opt_state=opt_state), terms

  return step


@functools.partial(jax.jit, static_argnames=("module",))
def _encode_batch(params, batch: Inputs, module: CrossModalEncoder) -> jax.Array:
  cls, _ = module.apply(params, batch)
  return cls


def _pad_rows(spec: ModalitySpec, inp: ModalityInput, start: int, size: int) -> ModalityInput:
  """Rows [start, start + size) of one modality as NumPy, padded past the end with absent rows."""
  values = np.asarray(inp.values)
  n = values.shape[0]
  stop = min(start + size, n)
  pad = size - (stop - start)

  def take(array, fill):
    rows = np.asarray(array)[start:stop]
    if pad:
      rows = np.concatenate([rows, np.full((pad,) + rows.shape[1:], fill, rows.dtype)])
    return rows

  present = np.ones(n, bool) if inp.present is None else inp.present
  mask = None if inp.mask is None else take(inp.mask, False)
  return ModalityInput(values=take(values, -1 if spec.kind == "categorical" else 0),
                       mask=mask, present=take(present, False))


def encode_items(params, module: CrossModalEncoder, inputs: Inputs,
                 batch_size: int) -> np.ndarray:
  """The CLS features of all N items: [N, output_dim] float32.

  Items go through in batches of exactly `batch_size` (the last padded with absent rows), so
  the encoder compiles once whatever N is.
  """
  inputs = jax.device_get(inputs)  # to the host once, not once per batch
  n = np.asarray(next(iter(inputs.values())).values).shape[0]
  out = []
  for start in range(0, n, batch_size):
    batch = {s.name: _pad_rows(s, inputs[s.name], start, batch_size) for s in module.specs}
    out.append(np.asarray(_encode_batch(params, batch, module)))
  return np.concatenate(out)[:n] if out else np.zeros((0, module.output_dim), np.float32)


__all__ = ["DEFAULT_WEIGHTS", "PretrainState", "encode_items", "init_state", "make_train_step",
           "pretrain_loss", "regression_target", "sample_masks", "symmetric_info_nce"]
