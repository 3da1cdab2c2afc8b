"""The shared TSV reader (known answers for every rule) and the item-text loader built on it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from alignrec_jax.data import tsv
from alignrec_jax.data.content import load_content, load_item_texts
from alignrec_jax.errors import DataError


def _read(data: bytes, **kwargs) -> tsv.Table:
  kwargs.setdefault("expected_header", "a header")
  return tsv.read_table(data, "f.tsv", **kwargs)


def _fails(data: bytes, message: str, **kwargs) -> DataError:
  with pytest.raises(DataError) as info:
    _read(data, **kwargs)
  assert str(info.value) == message
  return info.value


# ---------------------------------------------------------------------------------------------
# Splitting into fields.


def test_fields_known_answer():
  t = _read(b"a\tb\tc\n1\t22\t\nxyz\t\t4\n")
  assert t.source == "f.tsv" and t.header == ("a", "b", "c") and t.num_rows == 2
  assert t.buf.tobytes() == b"1\t22\t\nxyz\t\t4\n"
  np.testing.assert_array_equal(t.starts, [[0, 2, 5], [6, 10, 11]])
  np.testing.assert_array_equal(t.lengths, [[1, 2, 0], [3, 0, 1]])
  assert t.strings("a") == ["1", "xyz"] and t.strings(2) == ["", "4"]
  assert t.field(1, "a") == b"xyz" and t.field(0, 2) == b""
  np.testing.assert_array_equal(t.matrix("a"), [[ord("1"), 0, 0], [ord("x"), ord("y"), ord("z")]])
  assert t.index("c") == 2 and t.index(1) == 1


def test_bom_crlf_and_stray_cr():
  t = _read(b"\xef\xbb\xbfa\tb\r\n1\tx\ry\r\n2\t3\r\n")
  assert t.header == ("a", "b")  # the byte-order mark is not part of the first name
  assert t.strings("b") == ["x\ry", "3"]  # only a CR before an LF is a line end


def test_a_final_cr_without_lf_ends_the_last_line():
  assert _read(b"a\tb\r\n1\t2\r").strings("b") == ["2"]


def test_no_final_newline_and_trailing_empty_lines():
  assert _read(b"a\tb\n1\t2").strings("b") == ["2"]
  assert _read(b"a\tb\n1\t2\n\n\r\n\n").strings("b") == ["2"]


def test_header_only_has_no_rows():
  for data in (b"a\tb", b"a\tb\n", b"a\tb\n\n"):
    t = _read(data)
    assert t.num_rows == 0 and t.starts.shape == (0, 2)
    assert t.integers("a").shape == (0,) and t.numbers("b").shape == (0,) and t.strings(0) == []


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n", b" \t\r\n"])
def test_empty_file(data):
  _fails(data, "f.tsv: empty file; expected a header with x", expected_header="a header with x")


def test_nul_byte_names_line_and_offset():
  _fails(
    b"a\tb\n1\t2\n3\x004\t5\n",
    "f.tsv: line 3: binary data (NUL byte at byte offset 9); "
    "expected a tab-separated UTF-8 text file",
  )
  # The offset is the file's, byte-order mark included; the line is the same.
  _fails(
    b"\xef\xbb\xbfa\x00\n",
    "f.tsv: line 1: binary data (NUL byte at byte offset 4); "
    "expected a tab-separated UTF-8 text file",
  )


def test_bad_utf8_names_line_and_offset():
  _fails(
    b"a\tb\n1\t2\r\n3\t\xc3\xa9\xff\n",
    "f.tsv: line 3: not UTF-8 text (undecodable byte "
    "0xff at byte offset 13); expected a tab-separated UTF-8 text file",
  )
  # A multi-byte character cut off at the end of the file.
  _fails(
    b"a\tb\n1\t\xc3",
    "f.tsv: line 2: not UTF-8 text (undecodable byte 0xc3 at byte offset "
    "6); expected a tab-separated UTF-8 text file",
  )
  with pytest.raises(DataError, match=r"^f.tsv: line 1: not UTF-8"):
    tsv.text_bytes(b"\xe9t\xe9", "f.tsv")


@pytest.mark.parametrize(
  "body, message",
  [
    (b"1\t2\t3\n3\n", "line 3: a single field (no tab); expected 3 fields as in the header"),
    (b"1\t2\t3\t4\n", "line 2: 4 tab-separated field(s); expected 3 fields as in the header"),
    (b"1\t2\t3\n1\t2\n", "line 3: 2 tab-separated field(s); expected 3 fields as in the header"),
    (b"1\t2\t3\n\n1\t2\t3\n", "line 3: an empty line; expected 3 fields as in the header"),
    (b"\n1\t2\t3\n", "line 2: an empty line; expected 3 fields as in the header"),
    (b"1\t2\t3\r\n\r\n1\t2\t3\n", "line 3: an empty line; expected 3 fields as in the header"),
  ],
)
def test_wrong_field_counts_name_the_line(body, message):
  error = _fails(b"a\tb\tc\n" + body, f"f.tsv: {message}")
  assert isinstance(error, tsv.FieldError)


def test_last_column_takes_the_rest_of_the_line():
  t = _read(b"id\ttext\n0\ta\tb\t\n1\t\n2\tc\n", rest_in_last=True)
  assert t.strings("text") == ["a\tb\t", "", "c"]
  assert t.strings("id") == ["0", "1", "2"]
  _fails(
    b"id\ttext\n0\ta\tb\n1\n",
    "f.tsv: line 3: a single field (no tab); expected at least "
    "2 fields as in the header, the last taking the rest of the line",
    rest_in_last=True,
  )
  _fails(
    b"id\ttext\n0\ta\n\n1\tb\n",
    "f.tsv: line 3: an empty line; expected at least 2 fields "
    "as in the header, the last taking the rest of the line",
    rest_in_last=True,
  )


def test_one_column_file():
  assert _read(b"x\n1\n2\n").strings(0) == ["1", "2"]
  assert _read(b"x\n1\t2\n", rest_in_last=True).strings(0) == ["1\t2"]
  _fails(b"x\n1\n\n2\n", "f.tsv: line 3: an empty line; expected 1 fields as in the header")


def test_header_is_checked_before_the_rows():
  seen = []

  def check(fields):
    seen.append(fields)
    raise DataError("bad header")

  with pytest.raises(DataError, match="^bad header$"):
    _read(b"a\tb:c\r\n1\n", check_header=check)  # the short row on line 2 is not reached
  assert seen == [("a", "b:c")]


def test_reads_paths_and_names_them(tmp_path):
  path = tmp_path / "x.tsv"
  path.write_bytes(b"a\n1\n")
  for file in (path, str(path)):
    t = tsv.read_table(file, expected_header="a")
    assert t.source == str(path) and t.strings("a") == ["1"]
  assert tsv.read_table(b"a\n1\n", expected_header="a").source == "<bytes>"
  with pytest.raises(DataError, match=r"missing\.tsv: cannot read the file \(No such file"):
    tsv.read_table(tmp_path / "missing.tsv", expected_header="a")


# ---------------------------------------------------------------------------------------------
# Column converters.


def test_integers():
  t = _read(b"a\tb\n0\t1\n123456789\t007\n42\t999999999999999999\n")
  values = t.integers("a")
  assert values.dtype == np.int64
  np.testing.assert_array_equal(values, [0, 123456789, 42])
  np.testing.assert_array_equal(t.integers("b", max_digits=18), [1, 7, 999999999999999999])


@pytest.mark.parametrize(
  "field, message",
  [
    (b"", "line 3: column a: empty field; expected a non-negative integer"),
    (b"-1", "line 3: column a: expected a non-negative integer, got '-1'"),
    (b"+1", "line 3: column a: expected a non-negative integer, got '+1'"),
    (b" 1", "line 3: column a: expected a non-negative integer, got ' 1'"),
    (b"1\r", "line 3: column a: expected a non-negative integer, got '1\\r'"),
    ("\u0663".encode(), "line 3: column a: expected a non-negative integer, got '\u0663'"),
    (
      b"1234567890",
      "line 3: column a: expected a non-negative integer of at most 9 digits, got '1234567890'",
    ),
    (b"12345678x0", "line 3: column a: expected a non-negative integer, got '12345678x0'"),
  ],
)
def test_integer_errors(field, message):
  t = _read(b"a\tb\n5\tx\n" + field + b"\tx\n")
  with pytest.raises(tsv.FieldError) as info:
    t.integers("a")
  assert str(info.value) == f"f.tsv: {message}" and info.value.row == 1


def test_integer_error_wording_and_label():
  t = _read(b"a:token\n1234567890\n")
  with pytest.raises(DataError, match=r"line 2: column a: expected an id of at most 9 digits, got"):
    t.integers(0, label="a", expected="an id", too_long="an id of at most 9 digits")


def test_a_huge_field_is_reported_without_a_huge_matrix():
  rows = b"1\n" * 200_000 + b"9" * 5_000_000 + b"\n"
  t = _read(b"a\n" + rows)
  with pytest.raises(DataError, match=r"line 200002: column a: .* at most 9 digits, got '9999"):
    t.integers("a")
  with pytest.raises(DataError, match=r"line 200002: column a: expected a finite number"):
    t.numbers("a")


def test_the_earliest_bad_field_of_a_column_is_reported():
  # A bad field on line 3 comes before an empty one on line 4, whatever the kinds of fault.
  t = _read(b"a\tb\n1\t1\nq\tx\n\t\n")
  with pytest.raises(DataError, match=r"line 3: column a: expected a non-negative integer"):
    t.integers("a")
  with pytest.raises(DataError, match=r"line 3: column b: expected a finite number, got 'x'"):
    t.numbers("b")


def test_numbers():
  fields = ["1", "1.0", "-2.5", "+3", "1e3", "1.5E-7", ".5", "5.", "0.1", "1.5e9"]
  t = _read(("r\n" + "\n".join(fields) + "\n").encode())
  values = t.numbers("r")
  assert values.dtype == np.float64
  assert values.tolist() == [float(f) for f in fields]  # exactly what float() reads


@pytest.mark.parametrize(
  "field, message",
  [
    ("", "empty field; expected a finite number"),
    ("nan", "expected a finite number, got 'nan'"),
    ("inf", "expected a finite number, got 'inf'"),
    ("1e999", "expected a finite number, got '1e999'"),
    ("1.2.3", "expected a finite number, got '1.2.3'"),
    ("e", "expected a finite number, got 'e'"),
    ("1_0", "expected a finite number, got '1_0'"),
    (" 1", "expected a finite number, got ' 1'"),
    ("1" * 65, "expected a finite number, got '" + "1" * 40 + "...'"),
  ],
)
def test_number_errors(field, message):
  t = _read(f"r\tx\n1\tx\n{field}\tx\n".encode())
  with pytest.raises(tsv.FieldError) as info:
    t.numbers("r")
  assert str(info.value) == f"f.tsv: line 3: column r: {message}"


def test_first_error_reports_the_earliest_line_then_the_first_check():
  t = _read(b"a\tb\n1\t2\n1\tx\ny\tz\n")
  with pytest.raises(DataError, match=r"line 3: column b"):
    tsv.first_error(lambda: t.integers("a"), lambda: t.integers("b"))
  t = _read(b"a\tb\n1\t2\ny\tz\n")
  with pytest.raises(DataError, match=r"line 3: column a"):
    tsv.first_error(lambda: t.integers("a"), lambda: t.integers("b"))
  a, b = tsv.first_error(lambda: 1, lambda: "two")
  assert (a, b) == (1, "two")


def test_first_repeat():
  assert tsv.first_repeat(np.array([3, 1, 2])) is None
  assert tsv.first_repeat(np.array([5, 7, 9, 7, 5])) == (1, 3)
  assert tsv.first_repeat(np.array([5, 7, 5, 7])) == (0, 2)
  assert tsv.first_repeat(np.zeros(0, np.int64)) is None


def test_error_and_show():
  t = _read(b"a\n1\n2\n")
  error = t.error(1, "something")
  assert isinstance(error, DataError) and str(error) == "f.tsv: line 3: something"
  assert error.row == 1
  copy = pickle.loads(pickle.dumps(error))
  assert (type(copy), str(copy), copy.row) == (tsv.FieldError, str(error), 1)
  assert tsv.show(b"ab\xff") == "'ab\ufffd'" and tsv.show("x" * 50, 3) == "'xxx...'"


# ---------------------------------------------------------------------------------------------
# Item texts (`load_item_texts`), the third format on the reader.


def _texts(tmp_path, body: str | bytes, **kwargs) -> list[str]:
  path = tmp_path / "item_text.tsv"
  data = body.encode("utf-8") if isinstance(body, str) else body
  path.write_bytes(b"itemID\ttext\n" + data)
  return load_item_texts(path, **kwargs)


def _text_error(tmp_path, body: str | bytes, pattern: str, **kwargs) -> None:
  with pytest.raises(DataError, match=r"item_text\.tsv: " + pattern):
    _texts(tmp_path, body, **kwargs)


def test_load_item_texts(tmp_path):
  path = tmp_path / "item_text.tsv"
  path.write_text("itemID\ttext\n1\tjazz,soul\r\n0\trock\twith tab\n2\t\n", encoding="utf-8")
  assert load_item_texts(path) == ["rock\twith tab", "jazz, soul", ""]
  assert load_item_texts(path, comma_space=False)[1] == "jazz,soul"
  assert load_item_texts(path, num_items=3) == ["rock\twith tab", "jazz, soul", ""]
  for body, message in [
    ("0\ta\n0\tb\n", "lines 2 and 3: item id 0 appears twice"),
    ("0\ta\n2\tb\n", r"item\(s\) 1 have no text: .* id is 2 \(line 3\)"),
    ("0\ta\n-1\tb\n", "line 3: column itemID: expected an item id .*'-1'"),
    ("0\ta\n1 b\n", r"line 3: a single field \(no tab\)"),
    ("0\ta\n\t\n", "line 3: column itemID: empty field"),
    ("0\ta\n\n1\tb\n", "line 3: an empty line"),
  ]:
    path.write_text("itemID\ttext\n" + body, encoding="utf-8")
    with pytest.raises(DataError, match=message):
      load_item_texts(path)
  path.write_text("item\ttext\n0\ta\n", encoding="utf-8")
  with pytest.raises(
    DataError,
    match=r"line 1 \(header\): expected 'itemID<TAB>text', found "
    r"'item\\ttext'",
  ):
    load_item_texts(path)
  path.write_text("itemID\ttext\tmore\n0\ta\tb\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"line 1 \(header\): expected 'itemID<TAB>text'"):
    load_item_texts(path)


def test_item_texts_keep_unusual_characters(tmp_path):
  # Only LF (or CRLF) ends a line: \x1c, \x85 and \u2028 are text, as are a stray CR and a BOM.
  texts = _texts(tmp_path, "0\ta\x1cb\x85c\u2028d\re\n1\t\ufeff\u00e9\n", comma_space=False)
  assert texts == ["a\x1cb\x85c\u2028d\re", "\ufeff\u00e9"]
  path = tmp_path / "item_text.tsv"
  path.write_bytes(b"\xef\xbb\xbfitemID\ttext\r\n0\tx\r\n")  # a leading BOM is not the header's
  assert load_item_texts(path) == ["x"]


def test_item_text_file_with_only_a_header(tmp_path):
  assert _texts(tmp_path, "") == []
  _text_error(
    tmp_path,
    "",
    r"0 item texts, expected one per item \(2\): item\(s\) 0, 1 have no "
    "text",
    num_items=2,
  )


def test_missing_item_is_named_not_the_last_row(tmp_path):
  # The reported bug: 1425 items, item 5 has no row, so the last row is id 1424 of 1424 rows.
  body = "".join(f"{i}\ttag{i}\n" for i in range(1425) if i != 5)
  _text_error(
    tmp_path,
    body,
    r"item\(s\) 5 have no text: ids must be 0\.\.n-1 for n items, but "
    r"the largest id is 1424 \(line 1425\) and the file has 1424 rows$",
  )
  _text_error(
    tmp_path,
    body,
    r"1424 item texts, expected one per item \(1425\): item\(s\) 5 "
    "have no text$",
    num_items=1425,
  )


def test_many_missing_items_are_counted(tmp_path):
  _text_error(
    tmp_path,
    "0\ta\n3\tb\n40\tc\n",
    r"item\(s\) 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, \.\.\. "
    r"\(38 in all\) have no text",
  )


def test_item_id_outside_num_items_names_its_line(tmp_path):
  _text_error(
    tmp_path,
    "0\ta\n1\tb\n3\tc\n2\td\n",
    r"line 4: column itemID: item id 3 is out of "
    r"range; expected ids 0\.\.2 \(3 items\)$",
    num_items=3,
  )


def test_item_text_not_utf8_names_its_line(tmp_path):
  _text_error(
    tmp_path,
    b"0\ta\n1\tb\xff\n",
    r"line 3: not UTF-8 text \(undecodable byte 0xff at "
    r"byte offset 19\)",
  )
  _text_error(tmp_path, b"0\ta\n1\tb\x00\n", r"line 3: binary data \(NUL byte")


def test_item_text_too_long_id(tmp_path):
  _text_error(
    tmp_path,
    "0\ta\n1234567890\tb\n",
    "line 3: column itemID: expected an item id "
    r"\(a non-negative integer\) of at most 9 digits",
  )


class _FakeTextEncoder:
  def encode_tokens(self, texts, max_length):
    return np.ones((len(texts), 2, 3), np.float32), np.ones((len(texts), 2), bool)


def test_content_loading_passes_the_item_count(tmp_path):
  (tmp_path / "t.tsv").write_text("itemID\ttext\n0\ta\n2\tc\n", encoding="utf-8")
  with pytest.raises(
    DataError,
    match=r"t\.tsv: 2 item texts, expected one per item \(3\): "
    r"item\(s\) 1 have no text",
  ):
    load_content(
      tmp_path,
      [("t", "sequence", "t.tsv")],
      num_items=3,
      cache_dir=tmp_path,
      text_encoder=_FakeTextEncoder(),
    )
  with pytest.raises(DataError, match=r"t\.tsv: line 3: column itemID: item id 2 is out of range"):
    load_content(
      tmp_path,
      [("t", "sequence", "t.tsv")],
      num_items=2,
      cache_dir=tmp_path,
      text_encoder=_FakeTextEncoder(),
    )
  (tmp_path / "t.tsv").write_text("itemID\ttext\n0\ta\n2\tc\n1\tb\n", encoding="utf-8")
  loaded = load_content(
    tmp_path,
    [("t", "sequence", "t.tsv")],
    num_items=3,
    cache_dir=tmp_path,
    text_encoder=_FakeTextEncoder(),
  )
  assert loaded.inputs["t"].values.shape == (3, 2, 3)
