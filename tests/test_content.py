"""Stage-1 content loading: every modality kind, its checks, the text cache, missing modalities."""

import numpy as np
import pytest

from alignrec_jax.data import content
from alignrec_jax.errors import DataError


class FakeTextEncoder:
  """Stands in for MiniLM: token states from the text's characters; counts its calls."""

  def __init__(self):
    self.calls = 0

  def encode_tokens(self, texts, max_length):
    self.calls += 1
    lengths = [min(len(t.split()), max_length) for t in texts]
    longest = max(lengths)
    states = np.zeros((len(texts), longest, 3), np.float32)
    mask = np.zeros((len(texts), longest), bool)
    for i, n in enumerate(lengths):
      states[i, :n] = i + 1.0
      mask[i, :n] = True
    return states, mask


def _write_texts(path, texts):
  path.write_text(
    "itemID\ttext\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(texts)), encoding="utf-8"
  )


def test_parse_modalities_rejects_bad_entries():
  assert content.parse_modalities([("a", "vector", "a.npy")]) == [("a", "vector", "a.npy")]
  with pytest.raises(ValueError, match="three"):
    content.parse_modalities([("a", "vector")])
  with pytest.raises(ValueError, match="kind 'image'"):
    content.parse_modalities([("a", "image", "a.npy")])
  with pytest.raises(ValueError, match="twice"):
    content.parse_modalities([("a", "vector", "a.npy"), ("a", "categorical", "b.npy")])
  with pytest.raises(ValueError, match="empty"):
    content.parse_modalities([])


def test_every_kind_loads_with_its_spec(tmp_path):
  _write_texts(tmp_path / "t.tsv", ["a b c", "d", "e f"])
  np.save(tmp_path / "g.npy", np.array([[0, 2], [1, -1], [-1, -1]], np.int64))
  audio = np.array([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 1.0]], np.float32)
  np.save(tmp_path / "a.npy", audio)
  encoder = FakeTextEncoder()
  loaded = content.load_content(
    tmp_path,
    [
      ("text", "sequence", "t.tsv"),
      ("genre", "categorical", "g.npy"),
      ("audio", "vector", "a.npy"),
    ],
    num_items=3,
    vector_tokens=2,
    cache_dir=tmp_path / "cache",
    text_encoder=encoder,
  )
  text, genre, vec = (loaded.specs[i] for i in range(3))
  assert (text.kind, text.input_dim, text.max_len) == ("sequence", 3, 3)
  assert (genre.kind, genre.vocab_size, genre.max_len) == ("categorical", 3, 2)
  assert (vec.kind, vec.input_dim, vec.num_tokens) == ("vector", 4, 2)
  np.testing.assert_array_equal(loaded.inputs["text"].mask.sum(axis=1), [3, 1, 2])
  # Vector rows are standardised; the all-zero row is an absent modality.
  np.testing.assert_array_equal(loaded.inputs["audio"].present, [True, False, True])
  row = loaded.inputs["audio"].values[0]
  expected = (audio[0] - audio[0].mean()) / np.sqrt(audio[0].var() + 1e-6)
  np.testing.assert_allclose(row, expected, rtol=1e-6)
  np.testing.assert_array_equal(loaded.inputs["audio"].values[1], 0.0)
  assert "absent for 1 items" in loaded.description
  # The item whose genres are all padding counts as absent too.
  assert "genre (categorical, g.npy): 2 token slots, vocabulary 3; absent for 1 items" in (
    loaded.description
  )


def test_text_states_are_cached_by_content(tmp_path):
  _write_texts(tmp_path / "t.tsv", ["a b", "c"])
  encoder = FakeTextEncoder()
  kwargs = dict(num_items=2, cache_dir=tmp_path / "cache", text_encoder=encoder)
  first = content.load_content(tmp_path, [("text", "sequence", "t.tsv")], **kwargs)
  again = content.load_content(tmp_path, [("text", "sequence", "t.tsv")], **kwargs)
  assert encoder.calls == 1
  np.testing.assert_array_equal(first.inputs["text"].values, again.inputs["text"].values)
  _write_texts(tmp_path / "t.tsv", ["a b", "c d e"])  # new contents: encoded again
  content.load_content(tmp_path, [("text", "sequence", "t.tsv")], **kwargs)
  assert encoder.calls == 2


@pytest.mark.parametrize(
  "array, message",
  [
    (np.zeros((3, 2), np.float32), "expected an integer array, got dtype float32"),
    (np.array([[0], [-2], [1]]), "row 1: token ids must be >= 0"),
    (np.full((3, 2), -1), "every token is padding"),
    (np.zeros((2, 2), np.int32), "2 rows, expected one per item \\(3\\)"),
    (np.zeros(3, np.int32), "2-D"),
  ],
)
def test_categorical_errors_name_the_file(tmp_path, array, message):
  np.save(tmp_path / "g.npy", array)
  with pytest.raises(DataError, match=f"g.npy: .*{message}"):
    content.load_content(tmp_path, [("g", "categorical", "g.npy")], num_items=3)


def test_vector_errors_name_the_file_and_cell(tmp_path):
  values = np.ones((3, 2), np.float32)
  values[2, 1] = np.nan
  np.save(tmp_path / "a.npy", values)
  with pytest.raises(
    DataError,
    match=r"a.npy: row 2 \(itemID 2\), column 1: expected finite "
    "values, got nan",
  ):
    content.load_content(tmp_path, [("a", "vector", "a.npy")], num_items=3)
  np.save(tmp_path / "b.npy", np.ones((3, 2), np.int32))
  with pytest.raises(DataError, match="b.npy: expected a floating-point array, got dtype int32"):
    content.load_content(tmp_path, [("b", "vector", "b.npy")], num_items=3)
  with pytest.raises(DataError, match="c.npy: file not found"):
    content.load_content(tmp_path, [("c", "vector", "c.npy")], num_items=3)
  with pytest.raises(DataError, match="item text"):
    content.load_content(tmp_path, [("t", "sequence", "a.npy")], num_items=3)


def test_text_with_the_wrong_item_count_is_an_error(tmp_path):
  _write_texts(tmp_path / "t.tsv", ["a", "b"])
  with pytest.raises(DataError, match="t.tsv: 2 item texts, expected one per item \\(3\\)"):
    content.load_content(
      tmp_path,
      [("t", "sequence", "t.tsv")],
      num_items=3,
      cache_dir=tmp_path,
      text_encoder=FakeTextEncoder(),
    )


def test_drop_modality_removes_the_same_items_as_missing_items(tmp_path):
  np.save(tmp_path / "a.npy", np.arange(1, 41, dtype=np.float32).reshape(20, 2))
  np.save(tmp_path / "g.npy", np.zeros((20, 1), np.int32))
  loaded = content.load_content(
    tmp_path, [("a", "vector", "a.npy"), ("g", "categorical", "g.npy")], num_items=20
  )
  dropped = content.drop_modality(loaded, "a", 0.5, seed=3)
  missing = content.missing_items(20, 0.5, seed=3)
  assert len(missing) == 10 and len(np.unique(missing)) == 10
  present = dropped.inputs["a"].present
  np.testing.assert_array_equal(np.flatnonzero(~present), missing)
  assert dropped.inputs["g"] is loaded.inputs["g"]
  assert loaded.inputs["a"].present.all(), "the original is left as it was"
  with pytest.raises(ValueError, match="no modality 'x'"):
    content.drop_modality(loaded, "x", 0.5, seed=0)
