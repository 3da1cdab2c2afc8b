"""Tests of the MMRec-format loader: good files, every kind of bad file, and the real datasets."""

from __future__ import annotations

import pathlib
import re
import time

import numpy as np
import pytest

from alignrec_jax.data import load_mmrec
from alignrec_jax.errors import DataError

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"

HEADER = "userID\titemID\trating\tx_label\n"
# Two users, three items; every user has train, valid and test rows.
GOOD_ROWS = [
  "0\t0\t1\t0",
  "0\t1\t1\t0",
  "0\t2\t1\t1",
  "1\t2\t1\t0",
  "1\t0\t1\t2",
  "1\t1\t1\t2",
  "0\t3\t1\t2",
]


def _folder(tmp_path: pathlib.Path, text: str | bytes, name: str = "toy.inter") -> pathlib.Path:
  folder = tmp_path / "ds"
  folder.mkdir(exist_ok=True)
  data = text.encode("utf-8") if isinstance(text, str) else text
  (folder / name).write_bytes(data)
  return folder


def _good(tmp_path: pathlib.Path, rows: list[str] | None = None) -> pathlib.Path:
  return _folder(tmp_path, HEADER + "\n".join(GOOD_ROWS if rows is None else rows) + "\n")


def _with_rows(tmp_path: pathlib.Path, replace: dict[int, str]) -> pathlib.Path:
  """The good file with data rows replaced (0-based row index -> text; row r is line r + 2)."""
  rows = list(GOOD_ROWS)
  for r, text in replace.items():
    rows[r] = text
  return _good(tmp_path, rows)


def _raises(folder: pathlib.Path, pattern: str, **kwargs) -> None:
  with pytest.raises(DataError, match=pattern):
    load_mmrec(str(folder), **kwargs)


# --- good input -------------------------------------------------------------------------------


def test_loads_a_good_file(tmp_path):
  ds = load_mmrec(str(_good(tmp_path)))
  assert ds.name == "toy"
  assert (ds.num_users, ds.num_items) == (2, 4)
  np.testing.assert_array_equal(ds.train.users, [0, 0, 1])
  np.testing.assert_array_equal(ds.train.items, [0, 1, 2])
  np.testing.assert_array_equal(ds.valid.items, [2])
  np.testing.assert_array_equal(ds.test.users, [1, 1, 0])
  np.testing.assert_array_equal(ds.test.items, [0, 1, 3])
  assert ds.train.users.dtype == np.int32 and ds.train.items.dtype == np.int32
  assert ds.features == {} and ds.num_users_without_train == 0 and ds.num_heldout_dropped == 0


def test_column_order_timestamp_extra_columns_crlf_bom_trailing_blank_lines(tmp_path):
  text = "\ufeffx_label\tnote\ttimestamp\titemID\trating\tuserID\r\n"
  text += "".join(
    f"{x}\tfoo bar\t1.5e9\t{i}\t{r}\t{u}\r\n"
    for u, i, r, x in ((0, 0, "4.0", 0), (0, 1, "-1", 1), (0, 2, "5", 2))
  )
  ds = load_mmrec(str(_folder(tmp_path, text + "\n\n")), name="custom")
  assert ds.name == "custom"
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (1, 1, 1)
  np.testing.assert_array_equal(ds.test.items, [2])


def test_heldout_rows_of_users_without_training_are_dropped_and_counted(tmp_path):
  rows = GOOD_ROWS + ["2\t0\t1\t1", "2\t1\t1\t2", "2\t3\t1\t2"]
  ds = load_mmrec(str(_good(tmp_path, rows)))
  assert ds.num_users == 3  # ids are dense: user 2 exists, it just cannot be evaluated
  assert ds.num_users_without_train == 1 and ds.num_heldout_dropped == 3
  assert 2 not in ds.valid.users and 2 not in ds.test.users
  assert (len(ds.valid), len(ds.test)) == (1, 3)


def test_features_keep_order_and_become_float32(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "b_feat.npy", np.arange(8, dtype=np.float64).reshape(4, 2))
  np.save(folder / "a_feat.npy", np.ones((4, 3), dtype=np.float16))
  ds = load_mmrec(str(folder), feature_files=["b_feat.npy", "a_feat.npy"])
  assert list(ds.features) == ["b_feat", "a_feat"]
  assert all(v.dtype == np.float32 for v in ds.features.values())
  np.testing.assert_array_equal(ds.features["b_feat"][3], [6, 7])
  assert ds.num_items == 4


def test_loading_writes_nothing(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "f.npy", np.ones((4, 2), dtype=np.float32))
  before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
  load_mmrec(str(folder), feature_files=["f.npy"])
  assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


# --- missing / unreadable files ---------------------------------------------------------------


def test_missing_folder(tmp_path):
  _raises(tmp_path / "nope", r"nope: dataset folder not found")


def test_missing_inter_file(tmp_path):
  _raises(_good(tmp_path), r"other\.inter: interaction file not found", inter_file="other.inter")


def test_no_inter_file_in_folder(tmp_path):
  (tmp_path / "ds").mkdir()
  _raises(tmp_path / "ds", r"ds: no \*\.inter file")


def test_several_inter_files(tmp_path):
  folder = _good(tmp_path)
  (folder / "second.inter").write_text(HEADER)
  _raises(folder, r"several \*\.inter files \(second\.inter, toy\.inter\)")
  assert len(load_mmrec(str(folder), inter_file="toy.inter").train) == 3


def test_binary_file(tmp_path):
  folder = _folder(tmp_path, HEADER.encode() + b"0\t0\t1\t0\n\x00\x01\x02\x03\n")
  _raises(folder, r"toy\.inter: line 3: binary data")


def test_undecodable_bytes(tmp_path):
  folder = _folder(tmp_path, HEADER.encode() + b"0\t0\t1\t0\n0\t1\xff\xfe\t1\t0\n")
  _raises(folder, r"toy\.inter: line 3: not UTF-8 text \(undecodable byte 0xff")


def test_empty_file(tmp_path):
  _raises(_folder(tmp_path, ""), r"toy\.inter: empty file; expected a header line")


def test_header_only(tmp_path):
  _raises(_folder(tmp_path, HEADER), r"toy\.inter: no data rows after the header")


# --- header -------------------------------------------------------------------------------------


def test_missing_required_column(tmp_path):
  folder = _folder(tmp_path, "userID\titemID\trating\n0\t0\t1\n")
  _raises(folder, r"toy\.inter: line 1 \(header\): missing column\(s\) x_label")


def test_space_separated_header_is_missing_columns(tmp_path):
  folder = _folder(tmp_path, "userID itemID rating x_label\n0 0 1 0\n")
  _raises(folder, r"toy\.inter: line 1 \(header\): missing column\(s\) userID, itemID")


def test_duplicate_header_column(tmp_path):
  folder = _folder(tmp_path, "userID\titemID\trating\tx_label\titemID\n0\t0\t1\t0\t0\n")
  _raises(folder, r"toy\.inter: line 1 \(header\): column 'itemID' appears twice")


# --- row shape ----------------------------------------------------------------------------------


def test_row_with_too_few_fields(tmp_path):
  _raises(
    _with_rows(tmp_path, {2: "0\t2\t1"}),
    r"toy\.inter: line 4: 3 tab-separated field\(s\); "
    r"expected 4 fields",
  )


def test_row_with_too_many_fields(tmp_path):
  _raises(_with_rows(tmp_path, {0: "0\t0\t1\t0\t9"}), r"toy\.inter: line 2: 5 tab-separated")


def test_empty_line_between_rows(tmp_path):
  _raises(_with_rows(tmp_path, {4: ""}), r"toy\.inter: line 6: an empty line; expected 4 fields")


# --- field values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
  ("row", "pattern"),
  [
    ("0\t3.5\t1\t0", r"line 4: column itemID: expected a non-negative integer, got '3\.5'"),
    ("abc\t1\t1\t0", r"line 4: column userID: expected a non-negative integer, got 'abc'"),
    ("0\t-1\t1\t0", r"line 4: column itemID: expected a non-negative integer, got '-1'"),
    ("0\t 1\t1\t0", r"line 4: column itemID: expected a non-negative integer, got ' 1'"),
    ("0\t1e3\t1\t0", r"line 4: column itemID: expected a non-negative integer, got '1e3'"),
    ("0\t\t1\t0", r"line 4: column itemID: empty field"),
    ("0\t1234567890\t1\t0", r"line 4: column itemID: expected an id of at most 9 digits"),
    (
      "0\t1\t1\t3",
      r"line 4: column x_label: expected 0 \(train\), 1 \(valid\) or 2 \(test\), "
      r"got 3",
    ),
    ("0\t1\t1\tx", r"line 4: column x_label: expected a non-negative integer, got 'x'"),
    ("0\t1\tabc\t0", r"line 4: column rating: expected a finite number, got 'abc'"),
    ("0\t1\tnan\t0", r"line 4: column rating: expected a finite number, got 'nan'"),
    ("0\t1\t1e999\t0", r"line 4: column rating: expected a finite number, got '1e999'"),
    ("0\t1\t1.2.3\t0", r"line 4: column rating: expected a finite number, got '1\.2\.3'"),
    ("0\t1\t1\r\t0", r"line 4: column rating: expected a finite number, got '1\\r'"),
  ],
)
def test_bad_field(tmp_path, row, pattern):
  _raises(_with_rows(tmp_path, {2: row}), r"toy\.inter: " + pattern)


def test_bad_timestamp(tmp_path):
  text = "userID\titemID\trating\ttimestamp\tx_label\n0\t0\t1\t100\t0\n0\t1\t1\t2020-01-01\t1\n"
  _raises(
    _folder(tmp_path, text),
    r"toy\.inter: line 3: column timestamp: expected a finite number, got '2020-01-01'",
  )


def test_first_bad_line_is_reported_across_columns(tmp_path):
  folder = _with_rows(tmp_path, {1: "0\t1\tbad\t0", 4: "x\t0\t1\t2"})
  _raises(folder, r"toy\.inter: line 3: column rating")


def test_duplicate_pair_names_both_lines(tmp_path):
  folder = _with_rows(tmp_path, {5: "0\t1\t1\t2"})
  _raises(folder, r"toy\.inter: lines 3 and 7: duplicate \(userID, itemID\) pair \(0, 1\)")


# --- splits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "split"), [(0, "train"), (1, "valid"), (2, "test")])
def test_empty_split(tmp_path, label, split):
  rows = [r for r in GOOD_ROWS if not r.endswith(f"\t{label}")]
  _raises(
    _good(tmp_path, rows),
    rf"toy\.inter: column x_label: no rows with x_label {label} \({split} split\)",
  )


def test_split_empty_after_dropping_users_without_training(tmp_path):
  rows = [r for r in GOOD_ROWS if not r.endswith("\t1")] + ["2\t0\t1\t1"]
  _raises(_good(tmp_path, rows), r"toy\.inter: column x_label: every valid row .* no training row")


# --- feature files ------------------------------------------------------------------------------


def test_feature_file_missing(tmp_path):
  _raises(_good(tmp_path), r"ds/img\.npy: (feature )?file not found", feature_files=["img.npy"])


def test_feature_file_not_npy_suffix(tmp_path):
  _raises(_good(tmp_path), r"ds/img: .*must be \.npy", feature_files=["img"])


def test_item_outside_feature_rows(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "f.npy", np.ones((3, 2), dtype=np.float32))
  _raises(
    folder,
    r"toy\.inter: line 8: column itemID: item 3 has no feature row \(.*f\.npy has "
    r"3 rows",
    feature_files=["f.npy"],
  )


def test_more_feature_rows_than_items(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "f.npy", np.ones((6, 2), dtype=np.float32))
  _raises(
    folder,
    r"f\.npy: has 6 rows but the largest itemID in .*toy\.inter is 3; expected 4",
    feature_files=["f.npy"],
  )


def test_feature_files_disagree_on_rows(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "a.npy", np.ones((4, 2), dtype=np.float32))
  np.save(folder / "b.npy", np.ones((5, 2), dtype=np.float32))
  _raises(folder, r"b\.npy: has 5 rows but .*a\.npy has 4", feature_files=["a.npy", "b.npy"])


def test_feature_not_2d(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "f.npy", np.ones((4, 2, 2), dtype=np.float32))
  _raises(folder, r"f\.npy: expected a 2-D array .* got shape \(4, 2, 2\)", feature_files=["f.npy"])


def test_feature_integer_dtype(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "f.npy", np.ones((4, 2), dtype=np.int64))
  _raises(
    folder, r"f\.npy: expected a floating-point array, got dtype int64", feature_files=["f.npy"]
  )


def test_feature_truncated(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "f.npy", np.ones((4, 8), dtype=np.float32))
  data = (folder / "f.npy").read_bytes()
  (folder / "f.npy").write_bytes(data[:-20])
  _raises(folder, r"f\.npy: not a readable \.npy array", feature_files=["f.npy"])


def test_feature_not_npy_at_all(tmp_path):
  folder = _good(tmp_path)
  (folder / "f.npy").write_text("hello")
  _raises(folder, r"f\.npy: not a readable \.npy array", feature_files=["f.npy"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_feature_non_finite_names_row(tmp_path, bad):
  folder = _good(tmp_path)
  arr = np.ones((4, 3), dtype=np.float32)
  arr[2, 1] = bad
  np.save(folder / "f.npy", arr)
  _raises(
    folder, r"f\.npy: row 2 \(itemID 2\), column 1: expected finite values", feature_files=["f.npy"]
  )


def test_feature_overflowing_float32(tmp_path):
  folder = _good(tmp_path)
  arr = np.ones((4, 3))
  arr[1, 0] = 1e300
  np.save(folder / "f.npy", arr)
  _raises(
    folder,
    r"f\.npy: row 1 \(itemID 1\), column 0: .*after conversion to float32",
    feature_files=["f.npy"],
  )


def test_same_modality_twice(tmp_path):
  folder = _good(tmp_path)
  np.save(folder / "f.npy", np.ones((4, 3), dtype=np.float32))
  _raises(folder, r"modality 'f' is configured twice", feature_files=["f.npy", "f.npy"])


# --- real datasets ------------------------------------------------------------------------------


def _shared(name: str) -> str:
  path = SHARED_DATA / name
  if not path.is_dir():
    pytest.skip(f"real dataset folder {path} is absent (the sibling shared/data of the repo)")
  return str(path)


def _counts(ds) -> tuple[int, int, int, int, int]:
  return ds.num_users, ds.num_items, len(ds.train), len(ds.valid), len(ds.test)


def test_real_lfm2k():
  ds = load_mmrec(_shared("lfm2k"), feature_files=["text_feat.npy", "audio_feat.npy"])
  assert _counts(ds) == (1858, 1425, 44327, 4799, 7219)
  assert [(k, v.shape) for k, v in ds.features.items()] == [
    ("text_feat", (1425, 384)),
    ("audio_feat", (1425, 128)),
  ]
  assert ds.num_users_without_train == 0


@pytest.mark.parametrize(
  ("folder", "counts"),
  [
    ("baby-graph", (19445, 7050, 118551, 21682, 20559)),
    ("sports-graph", (35598, 18357, 218409, 40029, 37899)),
  ],
)
def test_real_graph_only_datasets_load_fast(folder, counts):
  path = _shared(folder)
  start = time.perf_counter()
  ds = load_mmrec(path)
  seconds = time.perf_counter() - start
  assert _counts(ds) == counts
  # Typically 0.15-0.3 s; the bound is loose because the test machine's cores are shared.
  assert seconds < 1.5, f"{folder} took {seconds:.2f} s to load"


def test_real_synthetic_baby():
  ds = load_mmrec(_shared("synthetic-baby"), feature_files=["aligned_feat.npy"])
  assert _counts(ds)[2:] == (119443, 20181, 21168)
  assert (ds.num_users, ds.num_items) == (19445, 7050)
  assert ds.features["aligned_feat"].shape == (7050, 768)
  assert re.search(r"aligned_feat 768-d", ds.summary())
