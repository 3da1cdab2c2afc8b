"""The stage-1 encoder and its pre-training objective (models/encoder.py), and its step."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignrec_jax.data.content import ModalityInput, ModalitySpec, token_mask
from alignrec_jax.models import encoder as stage1
from alignrec_jax.models.encoder import CrossModalEncoder, TransformerBlock
from alignrec_jax.training import stage1 as stage1_training

SEQ_DIM, VEC_DIM, VOCAB, SEQ_LEN, CAT_LEN, VEC_TOKENS = 6, 10, 7, 5, 4, 2
SPECS = (
  ModalitySpec("text", "sequence", input_dim=SEQ_DIM, max_len=SEQ_LEN),
  ModalitySpec("tags", "categorical", max_len=CAT_LEN, vocab_size=VOCAB),
  ModalitySpec("image", "vector", input_dim=VEC_DIM, num_tokens=VEC_TOKENS),
)


def with_only(inputs, keep: str) -> dict[str, ModalityInput]:
  """The same inputs with every modality but `keep` marked absent: the oracle of `only=`."""
  out = {}
  for name, inp in inputs.items():
    batch = inp.values.shape[0]
    if name != keep:
      present = jnp.zeros((batch,), bool)
    elif inp.present is None:
      present = jnp.ones((batch,), bool)
    else:
      present = inp.present
    out[name] = dataclasses.replace(inp, present=present)
  return out


def tiny_encoder(num_layers: int = 1, output_dim: int = 8) -> CrossModalEncoder:
  return CrossModalEncoder(
    SPECS, width=16, num_heads=2, num_layers=num_layers, mlp_dim=32, output_dim=output_dim
  )


def synthetic_items(n: int, seed: int = 0) -> dict[str, ModalityInput]:
  """n items whose three modalities are all functions of one latent vector (so correlated).

  Text lengths vary from 1 to SEQ_LEN, tag lists from 1 to CAT_LEN (padding -1); the first item
  lacks its image, the second its tags.
  """
  rng = np.random.default_rng(seed)
  latent = rng.normal(size=(n, 3))
  text = (latent @ rng.normal(size=(3, SEQ_DIM)))[:, None, :] + 0.3 * rng.normal(
    size=(n, SEQ_LEN, SEQ_DIM)
  )
  text_len = rng.integers(1, SEQ_LEN + 1, size=n)
  text_mask = np.arange(SEQ_LEN)[None, :] < text_len[:, None]
  tag_logits = (latent @ rng.normal(size=(3, VOCAB)))[:, None, :] + 0.5 * rng.normal(
    size=(n, CAT_LEN, VOCAB)
  )
  tags = np.argmax(tag_logits, axis=-1).astype(np.int32)
  tag_len = rng.integers(1, CAT_LEN + 1, size=n)
  tags = np.where(np.arange(CAT_LEN)[None, :] < tag_len[:, None], tags, -1).astype(np.int32)
  image = 5.0 * latent @ rng.normal(size=(3, VEC_DIM)) + 0.1 * rng.normal(size=(n, VEC_DIM))
  present_image = np.ones(n, bool)
  present_image[0] = False
  present_tags = np.ones(n, bool)
  present_tags[1] = False
  return {
    "text": ModalityInput(
      jnp.asarray(text, jnp.float32), jnp.asarray(text_mask), jnp.ones(n, bool)
    ),
    "tags": ModalityInput(jnp.asarray(tags), None, jnp.asarray(present_tags)),
    "image": ModalityInput(jnp.asarray(image, jnp.float32), None, jnp.asarray(present_image)),
  }


@pytest.fixture(scope="module")
def setup():
  module = tiny_encoder()
  inputs = synthetic_items(6)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), inputs)
  return module, params, inputs


@jax.jit
def _apply_tiny(params, inputs):
  return tiny_encoder().apply(params, inputs)[0]


def _cls(module, params, inputs):
  # Jitted (eager dispatch is slow); every caller passes a `tiny_encoder()` module.
  assert module == tiny_encoder()
  return np.asarray(_apply_tiny(params, inputs))


def test_shapes_and_dtypes(setup):
  module, params, inputs = setup
  cls, tokens = module.apply(params, inputs)
  assert cls.shape == (6, 8) and cls.dtype == jnp.float32
  assert tokens["text"].shape == (6, SEQ_LEN, 16)
  assert tokens["tags"].shape == (6, CAT_LEN, 16)
  assert tokens["image"].shape == (6, VEC_TOKENS, 16)
  assert all(t.dtype == jnp.float32 for t in tokens.values())
  _, _, predictions = module.apply(params, inputs, with_heads=True)
  assert predictions["text"].shape == (6, SEQ_LEN, SEQ_DIM)
  assert predictions["tags"].shape == (6, CAT_LEN, VOCAB)
  assert predictions["image"].shape == (6, VEC_TOKENS, VEC_DIM)
  assert np.all(np.isfinite(cls))


def test_default_output_dim_is_768():
  inputs = synthetic_items(2)
  module = CrossModalEncoder(SPECS, width=16, num_heads=2, num_layers=1)
  shapes = jax.eval_shape(lambda x: module.apply(module.init(jax.random.PRNGKey(0), x), x), inputs)
  assert shapes[0].shape == (2, 768)


def test_no_leakage_across_batch(setup):
  module, params, inputs = setup
  before = _cls(module, params, inputs)
  other = synthetic_items(6, seed=5)
  # Replace item 3 entirely by another item's content.
  changed = {
    name: jax.tree.map(lambda a, b: a.at[3].set(b[3]), inputs[name], other[name]) for name in inputs
  }
  after = _cls(module, params, changed)
  keep = np.arange(6) != 3
  np.testing.assert_allclose(after[keep], before[keep], rtol=1e-5, atol=1e-6)
  assert not np.allclose(after[3], before[3])


def test_padding_and_absent_modalities_do_not_matter(setup):
  module, params, inputs = setup
  before = _cls(module, params, inputs)
  text = inputs["text"]
  noisy_text = jnp.where(text.mask[..., None], text.values, 1e3)  # padded tokens changed
  image = inputs["image"]
  noisy_image = image.values.at[0].set(-77.0)  # item 0 has no image
  tags = inputs["tags"]
  noisy_tags = tags.values.at[1].set(3)  # item 1 has no tags: its ids no longer matter
  changed = {
    "text": dataclasses.replace(text, values=noisy_text),
    "tags": dataclasses.replace(tags, values=noisy_tags),
    "image": dataclasses.replace(image, values=noisy_image),
  }
  np.testing.assert_allclose(_cls(module, params, changed), before, rtol=1e-5, atol=1e-6)
  # Even non-finite padding never reaches the output.
  nan_text = {
    **inputs,
    "text": dataclasses.replace(text, values=jnp.where(text.mask[..., None], text.values, jnp.nan)),
  }
  np.testing.assert_allclose(_cls(module, params, nan_text), before, rtol=1e-5, atol=1e-6)


def test_absent_modality_changes_the_item(setup):
  module, params, inputs = setup
  before = _cls(module, params, inputs)
  image = inputs["image"]
  without = {**inputs, "image": dataclasses.replace(image, present=image.present.at[2].set(False))}
  after = _cls(module, params, without)
  assert not np.allclose(after[2], before[2], atol=1e-4)
  np.testing.assert_allclose(np.delete(after, 2, 0), np.delete(before, 2, 0), rtol=1e-5, atol=1e-6)


def _np_layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _np_block(p, x, key_mask, num_heads):
  """One pre-LN block in float64 NumPy, written from the definition."""
  batch, length, width = x.shape
  hd = width // num_heads
  a = p["attention"]
  h = _np_layer_norm(x, p["ln_attn"]["scale"], p["ln_attn"]["bias"])
  out = np.zeros_like(x)
  for b in range(batch):
    q = h[b] @ a["query"]["kernel"] + a["query"]["bias"]
    k = h[b] @ a["key"]["kernel"] + a["key"]["bias"]
    v = h[b] @ a["value"]["kernel"] + a["value"]["bias"]
    heads = []
    for head in range(num_heads):
      sl = slice(head * hd, (head + 1) * hd)
      logits = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
      keys = np.flatnonzero(key_mask[b])
      w = np.zeros_like(logits)
      sub = np.exp(logits[:, keys] - logits[:, keys].max(1, keepdims=True))
      w[:, keys] = sub / sub.sum(1, keepdims=True)
      heads.append(w @ v[:, sl])
    out[b] = np.concatenate(heads, 1) @ a["out"]["kernel"] + a["out"]["bias"]
  x = x + out
  h = _np_layer_norm(x, p["ln_mlp"]["scale"], p["ln_mlp"]["bias"])
  h = h @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"]
  h = 0.5 * h * (1.0 + np.vectorize(math.erf)(h / math.sqrt(2.0)))
  return x + h @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]


def test_block_matches_numpy_reference():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 5, 8)).astype(np.float32)
  key_mask = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], bool)
  block = TransformerBlock(num_heads=2, mlp_dim=12)
  params = block.init(jax.random.PRNGKey(3), jnp.asarray(x), jnp.asarray(key_mask))
  # Non-trivial LayerNorm parameters so that they are checked too.
  params = jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape).astype(np.float32), params)
  got = np.asarray(block.apply(params, jnp.asarray(x), jnp.asarray(key_mask)))
  p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)["params"]
  want = _np_block(p64, x.astype(np.float64), key_mask, num_heads=2)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Hidden keys really are hidden: changing them leaves the visible rows' outputs unchanged.
  x2 = x.copy()
  x2[0, 2] += 5.0
  x2[1, 1:] -= 3.0
  got2 = np.asarray(block.apply(params, jnp.asarray(x2), jnp.asarray(key_mask)))
  np.testing.assert_allclose(got2[0, [0, 1, 3]], got[0, [0, 1, 3]], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got2[1, 0], got[1, 0], rtol=1e-5, atol=1e-6)


def test_sample_masks():
  n = 400
  inputs = synthetic_items(n, seed=2)
  masks = stage1.sample_masks(jax.random.PRNGKey(7), inputs, SPECS, 0.3)
  for spec in SPECS:
    m = np.asarray(masks[spec.name])
    valid = np.asarray(token_mask(spec, inputs[spec.name]))
    assert m.shape == valid.shape and m.dtype == bool
    assert not np.any(m & ~valid), spec.name  # never padding or absent modalities
    count = valid.sum(1)
    masked = m.sum(1)
    assert np.all(masked[count > 0] >= 1), spec.name
    assert np.all(masked[count == 0] == 0), spec.name
  # Text has 1..5 real tokens: where 0.3 n >= 1 the at-least-one floor cannot bias the count.
  text_valid = np.asarray(token_mask(SPECS[0], inputs["text"]))
  rows = text_valid.sum(1) >= 4
  fraction = np.asarray(masks["text"])[rows].sum() / text_valid[rows].sum()
  assert abs(fraction - 0.3) < 0.04, fraction
  # Different keys give different masks.
  other = stage1.sample_masks(jax.random.PRNGKey(8), inputs, SPECS, 0.3)
  assert not np.array_equal(np.asarray(other["text"]), np.asarray(masks["text"]))


@pytest.mark.slow
def test_encoding_one_modality_alone_equals_hiding_the_others(setup):
  module, params, inputs = setup
  for name in ("text", "image", "tags"):
    alone, tokens = module.apply(params, inputs, only=name)
    hidden = _cls(module, params, with_only(inputs, name))
    np.testing.assert_allclose(alone, hidden, rtol=1e-5, atol=1e-6)
    assert list(tokens) == [name]
  with pytest.raises(ValueError, match="only='audio'"):
    module.apply(params, inputs, only="audio")


@pytest.mark.slow
def test_single_modality_views_match_separate_calls(setup):
  module, params, inputs = setup
  _, terms = stage1.pretrain_loss(
    params["params"], module, inputs, jax.random.PRNGKey(0), pairs=[("text", "image")]
  )
  text = _cls(module, params, with_only(inputs, "text"))
  image = _cls(module, params, with_only(inputs, "image"))
  mask = jnp.array([0, 1, 1, 1, 1, 1], jnp.float32)  # item 0 has no image
  want = stage1.symmetric_info_nce(
    jnp.asarray(text), jnp.asarray(image), temperature=0.07, mask=mask
  )
  np.testing.assert_allclose(terms["contrastive"], want, rtol=1e-5)


@pytest.mark.slow
def test_fused_term_contrasts_the_masked_fused_view_with_each_modality(setup):
  module, params, inputs = setup
  key = jax.random.PRNGKey(3)
  loss, terms = stage1.pretrain_loss(
    params["params"], module, inputs, key, weights={"fused": 0.5}, mask_fraction=0.4
  )
  masks = stage1.sample_masks(key, inputs, SPECS, 0.4)  # the masks pretrain_loss draws
  fused, _ = module.apply(params, inputs, masks)
  want = 0.0
  for spec in SPECS:
    alone = _cls(module, params, with_only(inputs, spec.name))
    has = np.asarray(token_mask(spec, inputs[spec.name])).any(axis=1)
    want += stage1.symmetric_info_nce(
      fused, jnp.asarray(alone), temperature=0.07, mask=jnp.asarray(has, jnp.float32)
    )
  np.testing.assert_allclose(terms["fused"], want / len(SPECS), rtol=1e-5)
  _, plain = stage1.pretrain_loss(
    params["params"], module, inputs, key, weights={"fused": 0.0}, mask_fraction=0.4
  )
  assert "fused" not in plain  # weight 0 switches it off
  np.testing.assert_allclose(loss, plain["loss"] + 0.5 * terms["fused"], rtol=1e-5)


def test_contrastive_term_is_symmetric(setup):
  module, params, inputs = setup
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
  mask = jnp.array([1, 1, 0, 1, 1], jnp.float32)
  ab = stage1.symmetric_info_nce(a, b, temperature=0.1, mask=mask)
  ba = stage1.symmetric_info_nce(b, a, temperature=0.1, mask=mask)
  np.testing.assert_allclose(ab, ba, rtol=1e-6)
  key = jax.random.PRNGKey(0)
  _, t1 = stage1.pretrain_loss(params["params"], module, inputs, key, pairs=[("text", "image")])
  _, t2 = stage1.pretrain_loss(params["params"], module, inputs, key, pairs=[("image", "text")])
  np.testing.assert_allclose(t1["contrastive"], t2["contrastive"], rtol=1e-6)


@pytest.mark.slow
def test_loss_finite_and_gradients_reach_every_parameter(setup):
  module, params, inputs = setup
  grads, terms = jax.jit(
    jax.grad(lambda p, x: stage1.pretrain_loss(p, module, x, jax.random.PRNGKey(1)), has_aux=True)
  )(params["params"], inputs)
  assert set(terms) == {"mlm/text", "mlm/tags", "mlm/image", "contrastive", "fused", "loss"}
  assert all(np.isfinite(float(v)) for v in terms.values())
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
  assert not dead, dead
  assert all(np.all(np.isfinite(np.asarray(g))) for _, g in flat)


@pytest.mark.slow
def test_training_decreases_loss_and_compiles_once(setup):
  module, _, _ = setup
  inputs = synthetic_items(12, seed=3)
  pretrainer = stage1_training.Pretrainer(
    module=module,
    optimizer=optax.adam(3e-3),
    loss=dict(mask_fraction=0.4, temperature=0.2),
    num_examples=12,
    batch_size=12,
  )
  state0 = pretrainer.init_state(jax.random.PRNGKey(0), inputs)
  keys = jax.random.split(jax.random.PRNGKey(1), 30)
  rows, real = jnp.arange(12), jnp.ones(12, bool)

  def train_step(state, key):
    return pretrainer.train_step(state, inputs, rows, real, key)

  # 30 Adam steps as one lax.scan (the same batch each time).
  final, terms = jax.jit(lambda s, k: jax.lax.scan(train_step, s, k))(state0, keys)
  losses = np.asarray(terms["loss"])
  assert int(final.step) == 30
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
  # The same step under plain jit: one compilation for all steps, same values as the scan.
  step = jax.jit(train_step)
  state = state0
  for i in range(3):
    state, step_terms = step(state, keys[i])
    np.testing.assert_allclose(step_terms["loss"], losses[i], rtol=1e-4)
  assert step._cache_size() == 1


def test_encode_items_pads_to_fixed_batches(setup):
  module, params, inputs = setup
  features = stage1_training.encode_items(params["params"], module, inputs, batch_size=4)
  assert features.shape == (6, 8) and features.dtype == np.float32
  np.testing.assert_allclose(features, _cls(module, params, inputs), rtol=1e-5, atol=1e-6)
  before = stage1_training._encode_batch._cache_size()
  stage1_training.encode_items(params["params"], module, synthetic_items(9, seed=4), batch_size=4)
  assert stage1_training._encode_batch._cache_size() == before  # same shapes: no new compile


def test_anchored_features_put_the_pretrained_inputs_beside_the_cls(setup):
  """Known answer in NumPy: [mean of the real text states, the image vector (zeros where it
  is absent), the CLS], each L2-normalised; the tags (learned from scratch) only via the CLS."""
  module, params, inputs = setup
  anchored = dataclasses.replace(module, output="anchored")
  assert anchored.feature_dim == SEQ_DIM + VEC_DIM + 8
  features = stage1_training.encode_items(params["params"], anchored, inputs, batch_size=4)
  assert features.shape == (6, SEQ_DIM + VEC_DIM + 8)

  def unit(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)

  text, mask = np.asarray(inputs["text"].values), np.asarray(inputs["text"].mask)
  text_mean = (text * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  image = np.asarray(inputs["image"].values) * np.asarray(inputs["image"].present)[:, None]
  expected = np.concatenate(
    [unit(text_mean), unit(image), unit(_cls(module, params, inputs))], axis=1
  )
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
  assert not features[0, SEQ_DIM : SEQ_DIM + VEC_DIM].any()  # item 0 has no image
  # The same parameters serve both outputs: training never sees the anchors.
  assert jax.tree.structure(params) == jax.tree.structure(
    jax.jit(anchored.init)(jax.random.PRNGKey(0), inputs)
  )
