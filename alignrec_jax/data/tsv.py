"""One strict, vectorised reader for the package's tab-separated text files.

Every TSV the package reads (MMRec `.inter` files, RecBole atomic files, `item_text.tsv`) goes
through `read_table`, which does once what all of them share:

- the bytes must be UTF-8 text: a leading byte-order mark is dropped; a NUL byte or a byte that is
  not UTF-8 is an error naming its line and byte offset; CRLF line ends become LF (a CR anywhere
  else stays, so that a field check rejects it instead of it vanishing);
- line 1 is the header; its tab-separated names set the number of fields of every other line
  (optionally the last field takes the rest of the line, tabs included);
- trailing empty lines are ignored; an empty line between rows, or a row with the wrong number of
  fields, is an error naming its line.

The result, a `Table`, holds the body's bytes and each field's start and length in them, so a
column is checked and converted with numpy over all rows at once (the 296k rows of the Sports
`.inter` take a fraction of a second), or read as Python strings in the small files. The
converters raise `FieldError`, a `DataError` naming the file, line and column; `first_error` runs
several of them and reports the error on the earliest line.

Line numbers are 1-based and the header is line 1, so data row r (0-based) is line r + 2.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from alignrec_jax.errors import DataError

_TAB, _NL = 9, 10
_BOM = b"\xef\xbb\xbf"
# The characters of a decimal number; Python's float() then rejects malformed ones like "1.2.3".
_NUMBER_CHARS = np.zeros(256, dtype=bool)
_NUMBER_CHARS[[ord(c) for c in "0123456789.+-eE"]] = True


def show(value: bytes | str, limit: int = 40) -> str:
  """A short, unambiguous rendering of a field for an error message."""
  if isinstance(value, bytes):
    value = value.decode("utf-8", errors="replace")
  if len(value) > limit:
    value = value[:limit] + "..."
  return repr(value)


class FieldError(DataError):
  """A bad field; `row` is its 0-based data row, so that the earliest error can be reported."""

  def __init__(self, message: str, row: int):
    super().__init__(message)
    self.row = row

  def __reduce__(self):  # keeps `row` when the error is pickled (e.g. out of a worker process)
    return type(self), (str(self), self.row)


def text_bytes(raw: bytes, source: str) -> bytes:
  """`raw` checked to be UTF-8 text, without a byte-order mark, with CRLF line ends turned into LF.

  A CR at the very end of the file counts as a line end too (a CRLF file whose last LF is lost).

  Args:
    raw: the file's bytes.
    source: the file's name for error messages.

  Raises:
    DataError: a NUL byte (binary data) or a byte that is not UTF-8, naming the line and the byte
      offset in `raw`.
  """
  # A byte-order mark, as some spreadsheet tools write; offsets below still count it.
  bom = len(_BOM) if raw.startswith(_BOM) else 0
  text = raw[bom:] if bom else raw
  nul = text.find(b"\x00")
  if nul >= 0:
    line = text.count(b"\n", 0, nul) + 1
    raise DataError(
      f"{source}: line {line}: binary data (NUL byte at byte offset {nul + bom}); expected a "
      "tab-separated UTF-8 text file"
    )
  try:
    text.decode("utf-8")
  except UnicodeDecodeError as e:
    line = text.count(b"\n", 0, e.start) + 1
    raise DataError(
      f"{source}: line {line}: not UTF-8 text (undecodable byte 0x{text[e.start]:02x} at byte "
      f"offset {e.start + bom}); expected a tab-separated UTF-8 text file"
    ) from None
  # Only a CR right before an LF is part of a line end; a stray CR stays and fails validation.
  text = text.replace(b"\r\n", b"\n")
  if text.endswith(b"\r"):  # a CRLF file whose last line lost its LF
    text = text[:-1] + b"\n"
  return text


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
  """A TSV file split into fields: the header's names and, per row and column, where the field is.

  Attributes:
    source: the file's name, for error messages.
    header: the header line's tab-separated fields, as written.
    buf: the body (every line after the header) as uint8 [num_bytes]; every row ends in an LF.
    starts: int64 [num_rows, num_columns], the offset in `buf` of each field.
    lengths: int64 [num_rows, num_columns], the byte length of each field.
  """

  source: str
  header: tuple[str, ...]
  buf: np.ndarray
  starts: np.ndarray
  lengths: np.ndarray

  @property
  def num_rows(self) -> int:
    return int(self.starts.shape[0])

  def index(self, column: int | str) -> int:
    """The position of a column given by position or by its header name."""
    if isinstance(column, str):
      return self.header.index(column)
    return column

  def error(self, row: int, message: str) -> FieldError:
    """A `FieldError` for data row `row` (0-based): `SOURCE: line N: message`."""
    return FieldError(f"{self.source}: line {row + 2}: {message}", row)

  def field(self, row: int, column: int | str) -> bytes:
    """The bytes of one field."""
    c = self.index(column)
    start = int(self.starts[row, c])
    return self.buf[start : start + int(self.lengths[row, c])].tobytes()

  def strings(self, column: int | str) -> list[str]:
    """A column's fields decoded as Python strings, one per row (for small files)."""
    c = self.index(column)
    body = self.buf.tobytes()
    # Fields end at a tab or LF, ASCII bytes, so each slice of the UTF-8 body is UTF-8 itself.
    return [
      body[s : s + n].decode("utf-8")
      for s, n in zip(self.starts[:, c].tolist(), self.lengths[:, c].tolist(), strict=True)
    ]

  def matrix(self, column: int | str, width: int | None = None) -> np.ndarray:
    """A column's bytes, left-aligned and zero-padded: uint8 [num_rows, width].

    Args:
      column: the column.
      width: the number of bytes kept of each field; default the longest field's length.
    """
    c = self.index(column)
    starts, lengths = self.starts[:, c], self.lengths[:, c]
    if width is None:
      width = int(lengths.max(initial=0))
    width = max(width, 1)
    offsets = np.arange(width)
    inside = offsets[None, :] < lengths[:, None]
    index = np.where(inside, starts[:, None] + offsets[None, :], 0)
    return self.buf[index] * inside.astype(np.uint8)

  def _bounded(self, column: int | str, label: str | None, limit: int):
    """(index, name, lengths [n], matrix [n, w], inside [n, w]) of a column to convert.

    The matrix is cut at `limit` + 1 bytes (longer fields are errors anyway); `inside` marks
    the bytes that belong to each field.
    """
    c = self.index(column)
    lengths = self.lengths[:, c]
    matrix = self.matrix(c, min(int(lengths.max(initial=0)), limit + 1))
    inside = np.arange(matrix.shape[1])[None, :] < lengths[:, None]
    return c, label or self.header[c], lengths, matrix, inside

  def integers(
    self,
    column: int | str,
    *,
    label: str | None = None,
    max_digits: int = 9,
    expected: str = "a non-negative integer",
    too_long: str | None = None,
  ) -> np.ndarray:
    """A column of non-negative decimal integers (plain ASCII digits, nothing else): int64 [n].

    Args:
      column: the column.
      label: the column's name in messages; default its header field.
      max_digits: the most digits a field may have (at most 18, so that values fit in int64).
      expected: what a field should be, for the message on a field that is not digits.
      too_long: the same for a field of too many digits; default `expected` with the limit.

    Raises:
      FieldError: on the first empty, non-digit or too long field, naming its line and column.
    """
    if self.num_rows == 0:
      return np.zeros(0, dtype=np.int64)
    c, name, lengths, matrix, inside = self._bounded(column, label, max_digits)
    is_digit = (matrix >= ord("0")) & (matrix <= ord("9"))
    bad_row = ~np.all(is_digit | ~inside, axis=1) | (lengths > max_digits) | (lengths == 0)
    if bad_row.any():
      row = int(np.argmax(bad_row))
      field = self.field(row, c)
      if not field:
        raise self.error(row, f"column {name}: empty field; expected {expected}")
      if len(field) > max_digits and field.isdigit():  # bytes.isdigit is ASCII-only
        expected = too_long or f"{expected} of at most {max_digits} digits"
      raise self.error(row, f"column {name}: expected {expected}, got {show(field)}")
    # Horner's rule over the left-aligned digits, skipping the padding of shorter fields.
    values = np.zeros(matrix.shape[0], dtype=np.int64)
    digits = matrix.astype(np.int64) - ord("0")
    for j in range(matrix.shape[1]):
      values = np.where(inside[:, j], values * 10 + digits[:, j], values)
    return values

  def numbers(
    self, column: int | str, *, label: str | None = None, max_chars: int = 64
  ) -> np.ndarray:
    """A column of finite decimal numbers (as Python's float() reads them): float64 [n].

    Args:
      column: the column.
      label: the column's name in messages; default its header field.
      max_chars: the longest field accepted.

    Raises:
      FieldError: on the first empty, malformed, non-finite or too long field, naming its line.
    """
    if self.num_rows == 0:
      return np.zeros(0, dtype=np.float64)
    c, name, lengths, matrix, inside = self._bounded(column, label, max_chars)
    bad_row = ~np.all(_NUMBER_CHARS[matrix] | ~inside, axis=1) | (lengths > max_chars)
    bad_row |= lengths == 0
    if not bad_row.any():
      # The charset admits malformed strings like "1.2.3" or "e"; real files have few distinct
      # values (ratings) or cheap ones (timestamps), so float() reads each distinct one once.
      strings = np.ascontiguousarray(matrix).view(f"S{matrix.shape[1]}")[:, 0]
      unique, inverse = np.unique(strings, return_inverse=True)
      values = np.zeros(len(unique), dtype=np.float64)
      for k, s in enumerate(unique):
        try:
          values[k] = float(s.decode("ascii"))
        except ValueError:
          values[k] = np.nan
      inverse = inverse.reshape(-1)
      bad_row = ~np.isfinite(values)[inverse]
      if not bad_row.any():
        return values[inverse]
    row = int(np.argmax(bad_row))
    field = self.field(row, c)
    if not field:
      raise self.error(row, f"column {name}: empty field; expected a finite number")
    raise self.error(row, f"column {name}: expected a finite number, got {show(field)}")


def first_error(*checks: Callable[[], Any]) -> list[Any]:
  """Runs every check and returns their results; on `FieldError`s raises the earliest line's.

  Ties go to the earlier check, so listing the columns in file order reports the first bad field.
  """
  results, errors = [], []
  for check in checks:
    try:
      results.append(check())
    except FieldError as e:
      errors.append(e)
  if errors:
    raise min(errors, key=lambda e: e.row)  # min keeps the first of equal rows
  return results


def first_repeat(keys: np.ndarray) -> tuple[int, int] | None:
  """The earliest row whose key an earlier row has, as (that earlier row, the row); None if none.

  Args:
    keys: int [n], one key per row (e.g. a (user, item) pair folded into one integer).
  """
  order = np.argsort(keys, kind="stable")
  repeated = np.flatnonzero(keys[order[1:]] == keys[order[:-1]])
  if not repeated.size:
    return None
  second = int(order[repeated + 1].min())
  first = int(np.flatnonzero(keys == keys[second])[0])
  return first, second


def _field_bounds(
  source: str, buf: np.ndarray, num_columns: int, rest_in_last: bool
) -> tuple[np.ndarray, np.ndarray]:
  """Checks every line's field count; returns the fields' starts and lengths [rows, columns]."""
  if not buf.size:
    empty = np.zeros((0, num_columns), dtype=np.int64)
    return empty, empty.copy()
  newlines = np.flatnonzero(buf == _NL)
  tabs = np.flatnonzero(buf == _TAB)
  # Searching the (fewer) line ends among the tabs is cheaper than the other way round.
  tabs_per_line = np.diff(np.searchsorted(tabs, newlines), prepend=0)
  separators = num_columns - 1
  bad = tabs_per_line < separators if rest_in_last else tabs_per_line != separators
  line_starts = np.concatenate([[0], newlines[:-1] + 1])
  bad |= newlines == line_starts  # an empty line is no row, even in a one-column file
  if bad.any():
    row = int(np.argmax(bad))
    fields = int(tabs_per_line[row]) + 1
    if newlines[row] == line_starts[row]:
      got = "an empty line"
    elif fields == 1:
      got = "a single field (no tab)"
    else:
      got = f"{fields} tab-separated field(s)"
    expected = f"at least {num_columns}" if rest_in_last else f"{num_columns}"
    rest = ", the last taking the rest of the line" if rest_in_last else ""
    raise FieldError(
      f"{source}: line {row + 2}: {got}; expected {expected} fields as in the header{rest}", row
    )
  if rest_in_last and tabs.size != separators * newlines.size:
    # Only each line's first `separators` tabs end fields; later ones belong to the last field.
    line_of_tab = np.searchsorted(newlines, tabs)
    first_tab = np.cumsum(tabs_per_line) - tabs_per_line
    keep = np.arange(tabs.size) - first_tab[line_of_tab] < separators
    ends = np.sort(np.concatenate([tabs[keep], newlines])).reshape(-1, num_columns)
  else:
    # With every row's shape checked, the separators (tabs and LFs) end the fields in order.
    ends = np.flatnonzero((buf == _TAB) | (buf == _NL)).reshape(-1, num_columns)
  starts = np.empty_like(ends)
  starts.flat[0] = 0
  starts.flat[1:] = ends.flat[:-1] + 1
  return starts, ends - starts


def read_table(
  file: str | os.PathLike[str] | bytes,
  source: str | None = None,
  *,
  expected_header: str,
  check_header: Callable[[Sequence[str]], object] | None = None,
  rest_in_last: bool = False,
) -> Table:
  """Reads a TSV file with a header line (see the module docstring); strict about everything shared.

  Args:
    file: the file's path, or its bytes already read (e.g. a member of a zip).
    source: the file's name in error messages; default the path.
    expected_header: what the header should be, for the message on an empty file (e.g. "a header
      line with the tab-separated columns a, b").
    check_header: called with the header's fields before the rows are looked at; raises
      `DataError` on a bad header.
    rest_in_last: the last column takes the rest of the line, tabs included, so a row may have
      more tabs than the header (but not fewer).

  Returns:
    The table; it may have no rows (a file of the header only).

  Raises:
    DataError: the file cannot be read, is empty, is not UTF-8 text, or a line has the wrong
      number of fields (or is empty); the message names the file and the line.
  """
  if isinstance(file, bytes | bytearray | memoryview):
    raw = bytes(file)
    source = source if source is not None else "<bytes>"
  else:
    path = pathlib.Path(os.fspath(file))
    source = source if source is not None else str(path)
    try:
      raw = path.read_bytes()
    except OSError as e:
      raise DataError(f"{source}: cannot read the file ({e.strerror or e})") from e
  data = text_bytes(raw, source)
  if not data or data.isspace():
    raise DataError(f"{source}: empty file; expected {expected_header}")
  end = data.find(b"\n")
  end = len(data) if end < 0 else end
  header = tuple(data[:end].decode("utf-8").split("\t"))
  if check_header is not None:
    check_header(header)
  # Trailing empty lines carry no data; empty lines between rows are reported as errors.
  stop = len(data)
  while stop > end and data[stop - 1] == _NL:
    stop -= 1
  buf = np.frombuffer(data, dtype=np.uint8)[end + 1 : stop + 1]
  if stop > end and buf.size == stop - end - 1:  # the last row had no LF: give it one
    buf = np.append(buf, np.uint8(_NL))
  starts, lengths = _field_bounds(source, buf, len(header), rest_in_last)
  return Table(source=source, header=header, buf=buf, starts=starts, lengths=lengths)
