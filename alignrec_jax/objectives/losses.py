"""The loss terms of AlignRec's two stages and of MMRec's LightGCN: pure, keyword-only, masked.

Every function takes `mask` [B] float32 (1 for real rows, 0 for the padding of the last partial
batch) and ignores masked rows exactly: a padded batch gives the same value and gradients as the
unpadded one. Weights are applied by the caller (models/*.py), from the config.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from alignrec_jax.normalize import l2_normalize


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def bpr(
  *, pos_scores: jax.Array, neg_scores: jax.Array, mask: jax.Array, eps: float = 0.0
) -> jax.Array:
  """Bayesian personalised ranking: -mean log(eps + sigmoid(pos - neg)).

  eps = 0 gives AlignRec's `-logsigmoid` form (computed stably); MMRec's LightGCN uses 1e-10.
  """
  diff = pos_scores - neg_scores
  per_row = -jax.nn.log_sigmoid(diff) if eps == 0.0 else -jnp.log(eps + jax.nn.sigmoid(diff))
  return _masked_mean(per_row, mask)


def half_squared_norms(*embeddings: jax.Array, mask: jax.Array, denominator: float) -> jax.Array:
  """sum over tensors of 0.5 ||rows||^2 summed over real rows, / denominator (AlignRec's L2)."""
  total = sum(0.5 * jnp.sum(jnp.sum(e * e, axis=-1) * mask) for e in embeddings)
  return total / denominator


def frobenius_norms(*embeddings: jax.Array, mask: jax.Array) -> jax.Array:
  """sum over tensors of ||rows||_F (not squared), / the number of real rows (MMRec's EmbLoss)."""
  total = sum(jnp.sqrt(jnp.sum(jnp.sum(e * e, axis=-1) * mask)) for e in embeddings)
  return total / jnp.maximum(jnp.sum(mask), 1.0)


def cosine_alignment(*, users: jax.Array, items: jax.Array, mask: jax.Array) -> jax.Array:
  """1 - mean cos(users_k, items_k): AlignRec's user-item alignment (UIA)."""
  cos = jnp.sum(l2_normalize(users) * l2_normalize(items), axis=-1)
  return 1.0 - _masked_mean(cos, mask)


def info_nce(
  *, anchors: jax.Array, positives: jax.Array, temperature: float, mask: jax.Array
) -> jax.Array:
  """One-directional InfoNCE with in-batch negatives (AlignRec's content-category alignment).

  With rows L2-normalised, mean_k -log(exp(a_k.b_k / t) / sum_j exp(a_k.b_j / t)): anchors from
  `anchors` (the content view), the denominator over `positives` rows (the ID view), the
  positive counted in the denominator, duplicate rows not removed, padded rows excluded from both.

  Args:
    anchors: [B, d] content view.
    positives: [B, d] ID view, row k the positive of anchor k.
    temperature: tau.
    mask: [B] 1 for real rows.
  """
  return _normalized_info_nce(
    l2_normalize(anchors), l2_normalize(positives), mask, 1.0 / temperature
  )


# The B x B logits dominate this loss's cost, so its gradient is written by hand: two passes
# over the B x B matrix forward (the product, then exp and row sums) and two backward (two
# products with the saved exponentials), where automatic
# differentiation of a max-shifted logsumexp with a masking select makes about twice as many.
# Rows are unit vectors, so every logit lies in [-1/t, 1/t]: shifting by the constant 1/t
# instead of the row maximum cannot overflow, and for 1/t <= 40 cannot underflow to 0.
_MAX_CONSTANT_SHIFT = 40.0


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _normalized_info_nce(a, b, mask, inv_tau):
  loss, _ = _normalized_info_nce_fwd(a, b, mask, inv_tau)
  return loss


def _logit_shift(logits, inv_tau):
  """[B, 1]: the constant 1/t where that is safe, else each row's maximum."""
  if inv_tau <= _MAX_CONSTANT_SHIFT:
    return jnp.full((logits.shape[0], 1), inv_tau, logits.dtype)
  return jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))


def _normalized_info_nce_fwd(a, b, mask, inv_tau):
  logits = (a * inv_tau) @ b.T  # [B, B]
  shift = _logit_shift(logits, inv_tau)
  # Saved for the backward (instead of the logits) so that it needs no second exp pass.
  exps = jnp.exp(logits - shift) * mask[None, :]  # [B, B]
  row_sums = jnp.sum(exps, axis=1)  # [B]
  positive = jnp.sum(a * b, axis=-1) * inv_tau
  count = jnp.maximum(jnp.sum(mask), 1.0)
  per_row = jnp.log(row_sums) + shift[:, 0] - positive
  loss = jnp.sum(jnp.where(mask > 0, per_row, 0.0)) / count
  return loss, (a, b, mask, exps, row_sums, count)


def _normalized_info_nce_bwd(inv_tau, residuals, g):
  a, b, mask, exps, row_sums, count = residuals
  weight = g * mask / count  # [B] d loss / d per_row
  # d per_row_k / d logits_kj = softmax_kj (over real columns) - [j == k], so with
  # P = diag(scale) exps: grad_a = (P b - w b) / t and grad_b = (P^T a - w a) / t. The row
  # scaling is applied to the [B, d] factors, never to the [B, B] matrix: that saves two
  # elementwise passes over it (and their memory traffic) per InfoNCE term.
  scale = (weight / row_sums)[:, None]  # [B, 1]
  grad_a = inv_tau * (scale * (exps @ b) - weight[:, None] * b)
  grad_b = inv_tau * (exps.T @ (scale * a) - weight[:, None] * a)
  return grad_a, grad_b, jnp.zeros_like(mask)


_normalized_info_nce.defvjp(_normalized_info_nce_fwd, _normalized_info_nce_bwd)


# Column-block width of the Gram identity's ||Y^T Y||^2 (see _squared_gram_norm).
GRAM_BLOCK = 128


def similarity_preservation(
  *, embeddings: jax.Array, features: jax.Array, mask: jax.Array
) -> jax.Array:
  """||E E^T - cos(F)||_F / B, without forming either B x B matrix.

  E are the batch's content-branch item embeddings (raw dot products), F their features (the
  target cos(F) is detached); B is the number of real rows (MMRec's EmbLoss divides by it).
  Exactly, by the Gram identity ||X X^T - Y Y^T||_F^2 = ||X^T X||^2 - 2 ||X^T Y||^2 + ||Y^T Y||^2
  with X = E, Y = normalised F: O(B (d + D)^2) instead of O(B^2 (d + D)). Masked rows are zeroed,
  so they contribute nothing to either Gram matrix.

  Args:
    embeddings: [B, d].
    features: [B, D].
    mask: [B].
  """
  x = embeddings * mask[:, None]
  y = jax.lax.stop_gradient(l2_normalize(features) * mask[:, None])
  xx = x.T @ x  # [d, d]
  xy = x.T @ y  # [d, D]
  squared = jnp.sum(xx * xx) - 2.0 * jnp.sum(xy * xy) + _squared_gram_norm(y)
  # Rounding can leave a tiny negative where the two sides agree; sqrt'(0) is infinite, so the
  # floor keeps the gradient finite (it is exactly 0 only when E E^T equals the target).
  norm = jnp.sqrt(jnp.maximum(squared, 1e-12))
  return norm / jnp.maximum(jnp.sum(mask), 1.0)


def _squared_gram_norm(y: jax.Array, block: int = GRAM_BLOCK) -> jax.Array:
  """||Y^T Y||_F^2 for Y [B, D] from the upper block triangle of Y^T Y.

  Splitting Y's columns into blocks Y_1..Y_n, ||Y^T Y||^2 = sum_i ||Y_i^T Y_i||^2
  + 2 sum_{i<j} ||Y_i^T Y_j||^2, so row i needs only Y_i^T [Y_i ... Y_n]: (n + 1) / 2n of the
  FLOPs of the full product. At 768-d features this Gram product is the step's largest (2.4
  GFLOP at batch 2048); blocks of 128 cut it to 1.4 GFLOP (benchmarks/README.md has the block
  widths tried).
  """
  dim = y.shape[1]
  total = jnp.zeros((), y.dtype)
  for start in range(0, dim, block):
    width = min(block, dim - start)
    rows = y[:, start : start + width].T @ y[:, start:]  # [width, dim - start]
    total += jnp.sum(jnp.square(rows[:, :width])) + 2.0 * jnp.sum(jnp.square(rows[:, width:]))
  return total


def in_groups(
  loss: Callable[..., jax.Array], groups: int, mask: jax.Array, *rows: jax.Array
) -> jax.Array:
  """An in-batch loss over `groups` equal slices of the batch instead of the whole batch.

  `loss(*rows, mask)` is computed on each slice of B / groups consecutive rows (so each row's
  in-batch negatives are its slice's rows), and the slices' values are averaged weighted by
  their real rows: for a loss that is a mean over real rows, the mean over all rows of the
  per-slice terms. With the slices laid out as the devices' shares of the batch (equal,
  consecutive), each device computes its own slice's term and no rows are gathered across
  devices. groups <= 1: `loss` over the whole batch, unchanged.

  Args:
    loss: loss(*rows, mask) -> scalar, each of `rows` [B, ...].
    groups: slices; must divide B.
    mask: [B] 1 for real rows.
    *rows: the loss's row arrays, [B, ...] each.
  """
  if groups <= 1:
    return loss(*rows, mask)
  if mask.shape[0] % groups:
    raise ValueError(f"{groups} groups do not split a batch of {mask.shape[0]} rows evenly")

  def split(x: jax.Array) -> jax.Array:
    return x.reshape(groups, x.shape[0] // groups, *x.shape[1:])

  masks = split(mask)
  real = jnp.sum(masks, axis=1)
  # A slice of padding alone (the epoch's last batch) is computed with every row counted and
  # weighted 0: an all-padding mask would make InfoNCE's gradient 0 / 0 (NaN) even at weight 0.
  masks = jnp.where(real[:, None] > 0, masks, jnp.ones_like(masks))
  values = jax.vmap(loss)(*map(split, rows), masks)
  return jnp.sum(values * real) / jnp.maximum(jnp.sum(real), 1.0)
