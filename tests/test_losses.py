"""Each loss term against a plain NumPy formula, and exact invariance to batch padding."""

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

from alignrec_jax.objectives import losses

RNG = np.random.default_rng(0)
B, D, F = 7, 5, 9


def _data():
  return (
    RNG.normal(size=(B, D)),
    RNG.normal(size=(B, D)),
    RNG.normal(size=(B, D)),
    RNG.normal(size=(B, F)),
  )


def _pad(x, rows=3):
  return jnp.concatenate(
    [jnp.asarray(x, jnp.float32), jnp.asarray(RNG.normal(size=(rows,) + x.shape[1:]), jnp.float32)]
  )


ONES = jnp.ones(B)
PAD_MASK = jnp.concatenate([jnp.ones(B), jnp.zeros(3)])


def test_bpr():
  pos, neg = RNG.normal(size=B), RNG.normal(size=B)
  expected = -np.mean(np.log(1 / (1 + np.exp(-(pos - neg)))))
  np.testing.assert_allclose(
    losses.bpr(pos_scores=pos, neg_scores=neg, mask=ONES), expected, rtol=1e-6
  )
  expected_eps = -np.mean(np.log(1e-10 + 1 / (1 + np.exp(-(pos - neg)))))
  np.testing.assert_allclose(
    losses.bpr(pos_scores=pos, neg_scores=neg, mask=ONES, eps=1e-10), expected_eps, rtol=1e-6
  )


def test_half_squared_norms_divides_by_the_configured_batch():
  u, p, n, _ = _data()
  expected = 0.5 * ((u**2).sum() + (p**2).sum() + (n**2).sum()) / 2048
  got = losses.half_squared_norms(_pad(u), _pad(p), _pad(n), mask=PAD_MASK, denominator=2048)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_frobenius_norms_divide_by_real_rows():
  u, p, n, _ = _data()
  expected = (np.linalg.norm(u) + np.linalg.norm(p) + np.linalg.norm(n)) / B
  got = losses.frobenius_norms(_pad(u), _pad(p), _pad(n), mask=PAD_MASK)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_cosine_alignment():
  u, p, _, _ = _data()
  expected = 1 - np.mean(np.sum(ref.normalize(u) * ref.normalize(p), -1))
  np.testing.assert_allclose(
    losses.cosine_alignment(users=_pad(u), items=_pad(p), mask=PAD_MASK), expected, rtol=1e-6
  )


def test_info_nce_one_direction_with_duplicates():
  a, b, _, _ = _data()
  a[3], b[3] = a[1], b[1]  # a duplicate row stays in the denominator, as in the reference
  got = losses.info_nce(anchors=_pad(a), positives=_pad(b), temperature=0.2, mask=PAD_MASK)
  np.testing.assert_allclose(got, ref.info_nce(a, b, 0.2), rtol=1e-5)
  swapped = losses.info_nce(anchors=b, positives=a, temperature=0.2, mask=ONES)
  assert abs(float(swapped) - ref.info_nce(a, b, 0.2)) > 1e-4, "must not be symmetrised"


def test_similarity_preservation_gram_form_equals_the_dense_definition():
  e, _, _, f = _data()
  f[2] = 0.0  # zero feature row: cosine 0, no NaN
  x = e @ e.T
  y = ref.normalize(f) @ ref.normalize(f).T
  expected = np.linalg.norm(x - y) / B
  got = losses.similarity_preservation(embeddings=_pad(e), features=_pad(f), mask=PAD_MASK)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  dense = ref.similarity_preservation_dense(embeddings=_pad(e), features=_pad(f), mask=PAD_MASK)
  np.testing.assert_allclose(dense, expected, rtol=1e-5)


@pytest.mark.parametrize("dim", [7, 128, 256, 301, 768])
def test_squared_gram_norm_by_blocks(dim):
  y = RNG.normal(size=(40, dim))
  want = np.sum(np.square(y.T @ y))  # float64
  got = losses._squared_gram_norm(jnp.asarray(y, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5)


# 301-d features take three Gram blocks (the last one narrower), 96-d a single one.
@pytest.mark.parametrize("feature_dim", [96, 301])
def test_similarity_preservation_at_batch_scale_and_target_detached(feature_dim):
  e = jnp.asarray(RNG.normal(size=(512, 64)) * 0.05, jnp.float32)
  f = jnp.asarray(RNG.normal(size=(512, feature_dim)), jnp.float32)
  mask = jnp.ones(512)
  gram = jax.value_and_grad(
    lambda e, f: losses.similarity_preservation(embeddings=e, features=f, mask=mask), argnums=(0, 1)
  )
  dense = jax.value_and_grad(
    lambda e, f: ref.similarity_preservation_dense(embeddings=e, features=f, mask=mask),
    argnums=(0, 1),
  )
  (v1, (ge1, gf1)), (v2, (ge2, _)) = gram(e, f), dense(e, f)
  np.testing.assert_allclose(v1, v2, rtol=1e-4)
  np.testing.assert_allclose(ge1, ge2, rtol=1e-3, atol=1e-6)
  assert float(jnp.abs(gf1).max()) == 0.0, "the cosine target is detached"


@pytest.mark.parametrize("name", ["bpr", "uia", "nce", "sim", "l2"])
def test_padding_does_not_change_gradients(name):
  u, p, n, f = _data()

  def loss(u, p, n, f, mask):
    if name == "bpr":
      return losses.bpr(pos_scores=jnp.sum(u * p, -1), neg_scores=jnp.sum(u * n, -1), mask=mask)
    if name == "uia":
      return losses.cosine_alignment(users=u, items=p, mask=mask)
    if name == "nce":
      return losses.info_nce(anchors=u, positives=p, temperature=0.2, mask=mask)
    if name == "sim":
      return losses.similarity_preservation(embeddings=u, features=f, mask=mask)
    return losses.half_squared_norms(u, p, n, mask=mask, denominator=16)

  args = [jnp.asarray(a, jnp.float32) for a in (u, p, n, f)]
  v1, g1 = jax.value_and_grad(loss, argnums=(0, 1))(*args, ONES)
  padded = [_pad(a) for a in (u, p, n, f)]
  v2, g2 = jax.value_and_grad(loss, argnums=(0, 1))(*padded, PAD_MASK)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  for a, b in zip(g1, g2, strict=True):
    np.testing.assert_allclose(a, b[:B], rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(b[B:]) == 0), "padded rows get no gradient"


@pytest.mark.parametrize("temperature", [0.2, 0.01])  # 0.01: the row-maximum shift path
def test_info_nce_hand_written_gradient_matches_autodiff(temperature):
  rng = np.random.default_rng(7)  # its own stream: the inputs do not depend on the tests before
  a = jnp.asarray(rng.normal(size=(10, D)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(10, D)), jnp.float32)
  mask = jnp.asarray([1.0] * 8 + [0.0] * 2)

  def fast(a, b):
    return 3.0 * losses.info_nce(anchors=a, positives=b, temperature=temperature, mask=mask)

  def slow(a, b):
    return 3.0 * ref.info_nce_reference(anchors=a, positives=b, temperature=temperature, mask=mask)

  v1, g1 = jax.value_and_grad(fast, argnums=(0, 1))(a, b)
  v2, g2 = jax.value_and_grad(slow, argnums=(0, 1))(a, b)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  for x, y in zip(g1, g2, strict=True):
    # Each entry is a float32 sum of terms as large as the largest entry (about 25 at tau 0.01),
    # so its rounding error scales with that, not with the entry itself.
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6 * float(np.max(np.abs(y))))


@pytest.mark.slow
def test_in_groups_is_the_real_row_weighted_mean_of_each_slices_loss():
  # 12 rows in 3 slices of 4; the last slice holds 2 real rows, the middle one none.
  a, b = RNG.normal(size=(12, D)), RNG.normal(size=(12, D))
  mask = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0], np.float32)

  def nce(x, y, m):
    return losses.info_nce(anchors=x, positives=y, temperature=0.2, mask=m)

  got = losses.in_groups(nce, 3, jnp.asarray(mask), jnp.asarray(a), jnp.asarray(b))
  first, last = ref.info_nce(a[:4], b[:4], 0.2), ref.info_nce(a[8:10], b[8:10], 0.2)
  np.testing.assert_allclose(got, (4 * first + 2 * last) / 6, rtol=1e-5)
  # One group is the whole batch, and the whole batch is not its slices.
  whole = losses.in_groups(nce, 1, jnp.asarray(mask), jnp.asarray(a), jnp.asarray(b))
  np.testing.assert_allclose(whole, nce(a, b, mask), rtol=1e-6)
  assert abs(float(whole) - float(got)) > 1e-3
  # The slice of padding alone adds nothing to the gradient, and nothing NaN.
  grad = jax.grad(lambda x: losses.in_groups(nce, 3, jnp.asarray(mask), x, jnp.asarray(b)))(
    jnp.asarray(a, jnp.float32)
  )
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[4:8] == 0)
  with pytest.raises(ValueError, match="do not split"):
    losses.in_groups(nce, 5, jnp.asarray(mask), jnp.asarray(a), jnp.asarray(b))
