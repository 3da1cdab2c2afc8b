"""Item arrays: the checked .npy loader, row normalisation, combine_features, synthetic_features."""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from alignrec_jax.data import combine_features, load_item_array, load_mmrec, synthetic_features
from alignrec_jax.errors import DataError
from alignrec_jax.normalize import l2_normalize, l2_normalize_rows

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_known_answer_normalised():
  a = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], dtype=np.float32)
  b = np.array([[1.0], [5.0], [-0.5]], dtype=np.float64)
  combined, desc = combine_features({"a": a, "b": b})
  expected = np.array([[0.6, 0.8, 1.0], [0.0, 0.0, 1.0], [0.0, -1.0, -1.0]], dtype=np.float32)
  np.testing.assert_allclose(combined, expected, rtol=0, atol=1e-7)
  assert combined.dtype == np.float32
  assert desc == "a (2-d) + b (1-d), each row L2-normalised, concatenated: 3-d"


def test_zero_row_stays_zero_without_nan():
  combined, _ = combine_features({"a": np.zeros((2, 4), dtype=np.float32)})
  assert np.all(combined == 0) and not np.isnan(combined).any()


def test_raw_concatenation_and_order():
  a = np.arange(6, dtype=np.float32).reshape(3, 2)
  b = np.full((3, 1), 7.0, dtype=np.float32)
  combined, desc = combine_features({"b": b, "a": a}, normalize=False)
  np.testing.assert_array_equal(combined, np.concatenate([b, a], axis=1))
  assert desc == "b (1-d) + a (2-d), raw (not normalised), concatenated: 3-d"


def test_single_modality_description_and_no_aliasing():
  a = np.ones((2, 3), dtype=np.float32)
  combined, desc = combine_features({"text_feat": a}, normalize=False)
  assert desc == "text_feat (3-d), raw (not normalised): 3-d"
  combined[0, 0] = 5.0
  assert a[0, 0] == 1.0


def test_bad_inputs():
  with pytest.raises(ValueError, match="at least one modality"):
    combine_features({})
  with pytest.raises(ValueError, match="disagree on the number of items"):
    combine_features({"a": np.ones((3, 2)), "b": np.ones((4, 2))})
  with pytest.raises(ValueError, match="modality 'a': expected a 2-D"):
    combine_features({"a": np.ones(3)})


def test_lfm2k_audio_scale_and_normalisation():
  folder = SHARED_DATA / "lfm2k"
  if not folder.is_dir():
    pytest.skip(f"real dataset folder {folder} is absent (the sibling shared/data of the repo)")
  ds = load_mmrec(str(folder), feature_files=["text_feat.npy", "audio_feat.npy"])
  audio_norms = np.linalg.norm(ds.features["audio_feat"], axis=1)
  text_norms = np.linalg.norm(ds.features["text_feat"], axis=1)
  assert 1300 < np.median(audio_norms) < 1650  # VGGish rows: ~1,470
  np.testing.assert_allclose(text_norms, 1.0, atol=1e-4)

  combined, desc = combine_features(ds.features)
  assert combined.shape == (1425, 512) and combined.dtype == np.float32
  assert desc == (
    "text_feat (384-d) + audio_feat (128-d), each row L2-normalised, concatenated: 512-d"
  )
  np.testing.assert_allclose(np.linalg.norm(combined[:, 384:], axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(combined[:, :384], axis=1), 1.0, atol=1e-5)

  raw, _ = combine_features(ds.features, normalize=False)
  # Raw, the audio part dominates the concatenation (the reference pipeline's quirk).
  assert np.median(np.linalg.norm(raw[:, 384:], axis=1) / np.linalg.norm(raw, axis=1)) > 0.999


def test_synthetic_features_deterministic():
  a = synthetic_features(50, 8, seed=3)
  assert a.shape == (50, 8) and a.dtype == np.float32
  np.testing.assert_array_equal(a, synthetic_features(50, 8, seed=3))
  assert not np.array_equal(a, synthetic_features(50, 8, seed=4))
  big = synthetic_features(2000, 64, seed=0)
  assert abs(float(big.mean())) < 0.01 and abs(float(big.std()) - 1.0) < 0.01
  with pytest.raises(ValueError):
    synthetic_features(0, 8, seed=0)


def test_l2_normalize_rows_known_answer_and_the_jax_form_agrees():
  x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], np.float32)
  expected = np.array([[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], np.float32)
  for norm_dtype in (np.float64, np.float32):
    got = l2_normalize_rows(x, norm_dtype=norm_dtype)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
  np.testing.assert_allclose(l2_normalize(jnp.asarray(x)), expected, rtol=0, atol=1e-7)


def test_load_item_array_checks_and_converts(tmp_path):
  np.save(tmp_path / "f.npy", np.arange(6, dtype=np.float64).reshape(3, 2))
  got = load_item_array(tmp_path / "f.npy", kind="float", num_items=3)
  assert got.dtype == np.float32 and got.shape == (3, 2)
  np.testing.assert_array_equal(got, np.arange(6).reshape(3, 2))
  np.save(tmp_path / "i.npy", np.array([[1, -1], [2, 3]], np.int16))
  ints = load_item_array(str(tmp_path / "i.npy"), kind="int")
  assert ints.dtype == np.int16  # any integer dtype, kept as is

  with pytest.raises(DataError, match=r"f\.npy: 3 rows, expected one per item \(4\)"):
    load_item_array(tmp_path / "f.npy", kind="float", num_items=4)
  with pytest.raises(DataError, match="expected an integer array"):
    load_item_array(tmp_path / "f.npy", kind="int")
  with pytest.raises(DataError, match="expected a floating-point array"):
    load_item_array(tmp_path / "i.npy", kind="float")
  bad = np.zeros((3, 4), np.float32)
  bad[2, 1] = np.nan
  np.save(tmp_path / "nan.npy", bad)
  with pytest.raises(DataError, match="row 2 .*column 1: expected finite values"):
    load_item_array(tmp_path / "nan.npy", kind="float")
  np.save(tmp_path / "big.npy", np.full((1, 1), 1e300))  # inf once converted to float32
  with pytest.raises(DataError, match="finite"):
    load_item_array(tmp_path / "big.npy", kind="float")
  np.save(tmp_path / "flat.npy", np.ones(3, np.float32))
  with pytest.raises(DataError, match="2-D"):
    load_item_array(tmp_path / "flat.npy", kind="float")
  with pytest.raises(DataError, match="file not found"):
    load_item_array(tmp_path / "absent.npy", kind="float")
  with pytest.raises(DataError, match=".npy files"):
    load_item_array(tmp_path / "f.txt", kind="float")
  (tmp_path / "cut.npy").write_bytes((tmp_path / "f.npy").read_bytes()[:70])
  with pytest.raises(DataError, match="truncated or corrupt"):
    load_item_array(tmp_path / "cut.npy", kind="float")
