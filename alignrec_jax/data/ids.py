"""A dataset's own ids: the id-mapping files beside its `.inter`, as MMRec's preprocessing writes.

MMRec numbers users and items 0.. when it makes a dataset and keeps the original ids in two
tab-separated files in the dataset folder:

  u_id_mapping.csv   header `user_id<TAB>userID`: the original user id, then ours
  i_id_mapping.csv   header `asin<TAB>itemID`:    the original item id, then ours

Accepted here: any header naming the internal column `userID` (users) or `itemID` (items) and
at least one other column; the first other column is the original id, and any further columns
(e.g. a title) are carried along as the item's or user's description. Every internal id
0..n-1 must appear exactly once. A folder without these files has no original ids: exports then
use the internal ones.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from alignrec_jax.data import tsv
from alignrec_jax.errors import DataError

USER_FILE = "u_id_mapping.csv"
ITEM_FILE = "i_id_mapping.csv"


@dataclasses.dataclass(frozen=True)
class IdMap:
  """Original ids (and descriptions) of the users or items 0..n-1.

  Attributes:
    name: the original id's column name, e.g. "asin".
    original: [n] the original id of each internal id, as strings.
    extra: column name -> [n] strings, further columns of the file (e.g. "title").
  """

  name: str
  original: np.ndarray
  extra: dict[str, np.ndarray]

  def internal(self, ids) -> np.ndarray:
    """The internal ids of original ids (any iterable of str or int); DataError for unknowns."""
    lookup = {v: i for i, v in enumerate(self.original.tolist())}
    missing = [x for x in ids if str(x) not in lookup]
    if missing:
      shown = ", ".join(repr(x) for x in missing[:5])
      raise DataError(f"{self.name} {shown}{' ...' if len(missing) > 5 else ''} not in the dataset")
    return np.array([lookup[str(x)] for x in ids], np.int64)


def read_id_map(path: str | os.PathLike[str], *, internal: str, count: int) -> IdMap:
  """Reads one mapping file (see the module docstring) of `count` users or items.

  Raises:
    DataError: naming the file and line: a header without `internal` or without another
      column, an internal id that is not 0..count-1 or appears twice, or a missing id.
  """
  path = pathlib.Path(path)

  expected = f"a header naming {internal} and the original id's column"

  def check_header(header):
    if internal not in header or len(header) < 2:
      raise DataError(f"{path}: line 1 (header): expected {expected}, found {list(header)}")

  table = tsv.read_table(path, expected_header=expected, check_header=check_header)
  ids = table.integers(internal, max_digits=18)
  seen = np.zeros(count, np.int64)
  bad = np.flatnonzero(ids >= count)
  if bad.size:
    raise table.error(
      int(bad[0]),
      f"column {internal}: {ids[bad[0]]} is not an id of the dataset's {count} (0..{count - 1})",
    )
  np.add.at(seen, ids, 1)
  if np.any(seen > 1):
    twice = int(np.flatnonzero(seen > 1)[0])
    rows = np.flatnonzero(ids == twice)
    raise table.error(
      int(rows[1]),
      f"column {internal}: id {twice} appears a second time (first on line {int(rows[0]) + 2})",
    )
  if np.any(seen == 0):
    missing = np.flatnonzero(seen == 0)
    raise DataError(
      f"{path}: no row for {internal} {', '.join(map(str, missing[:5]))}"
      f"{' ...' if missing.size > 5 else ''}: every id 0..{count - 1} needs one"
    )
  others = [name for name in table.header if name != internal]
  order = np.argsort(ids)
  columns = {name: np.array(table.strings(name), dtype=object)[order] for name in others}
  return IdMap(name=others[0], original=columns.pop(others[0]), extra=columns)


def read_id_maps(
  folder: str | os.PathLike[str], *, num_users: int, num_items: int
) -> tuple[IdMap | None, IdMap | None]:
  """(users, items) of the mapping files in `folder`, each None where its file is absent."""
  folder = pathlib.Path(folder)
  users = folder / USER_FILE
  items = folder / ITEM_FILE
  return (
    read_id_map(users, internal="userID", count=num_users) if users.is_file() else None,
    read_id_map(items, internal="itemID", count=num_items) if items.is_file() else None,
  )
