"""MovieLens-100k in MMRec's format, with text and genre item features, prepared from PyPI.

The data comes from the wheel of `recbole==1.2.1`, which ships it as RecBole "atomic files" under
`recbole/dataset_example/ml-100k/`:
- `ml-100k.inter`: `user_id:token  item_id:token  rating:float  timestamp:float` (tab-separated),
  one row per rating;
- `ml-100k.item`: `item_id:token  movie_title:token_seq  release_year:token  class:token_seq`,
  where `class` holds the space-separated genres.
MovieLens' terms forbid redistribution, so nothing is shipped: pip downloads the wheel (and only
the wheel) into a cache at preparation time and the two files are read straight from the zip.

The recipe (`prepare_ml100k`), in full:
- Interactions: every rating is one interaction, whatever its value (no rating threshold, no
  k-core filter); the rating and timestamp columns are kept.
- Ids: users are numbered 0.. in increasing order of their original (integer) id; items likewise,
  keeping only the items that appear in the interactions (an item of `ml-100k.item` that nobody
  rated gets no id, and is counted in the meta).
- Split: MMRec's per-user sizes (`mmrec_split_sizes`: n < 10 -> n-2 / 1 / 1, otherwise
  valid = int(0.2 n) // 2, test = int(0.2 n) - valid), but CHRONOLOGICAL within each user: the
  user's interactions sorted by timestamp, ties broken by item id, the earliest go to train, the
  next to valid, the latest to test. MMRec's own split shuffles within a user instead; a
  time-ordered split is the realistic one for data with timestamps (no training on the future).
- Text: `ITEM_TEXT_TEMPLATE`, e.g. "Toy Story (1995); genres: Animation, Children's, Comedy";
  " (year)" is left out when the release year is not four digits (ml-100k has "V" for one item
  and "unkonwn" for another). Encoded by all-MiniLM-L6-v2 (mean pooled, L2-normalised).
- Genres: the vocabulary is the distinct genre names sorted (Python string order), written to
  `genres.json`; `genre_feat.npy` is the float32 multi-hot [I, G]; `genre_tokens.npy` the int32
  genre ids of each item in increasing order, padded with -1 to the largest genre count.

The output folder loads with
`load_mmrec(folder, feature_files=("text_feat.npy", "genre_feat.npy"))`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time
import zipfile
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from alignrec_jax import downloads
from alignrec_jax.data import tsv
from alignrec_jax.data.dataset import mmrec_split_sizes
from alignrec_jax.data.ids import ITEM_FILE, USER_FILE
from alignrec_jax.errors import AssetError, DataError
from alignrec_jax.text import assets

RECBOLE_VERSION = "1.2.1"  # pinned: the files below were checked against this release
RECBOLE_REQUIREMENT = f"recbole=={RECBOLE_VERSION}"
INTER_MEMBER = "ml-100k.inter"
ITEM_MEMBER = "ml-100k.item"
# Bump when the written files change for the same source and encoder, so old folders are redone.
RECIPE_VERSION = 2  # 2: the id-mapping files
DATASET_NAME = "ml100k"
META_FILE = "meta.json"
ITEM_TEXT_TEMPLATE = "{title} ({year}); genres: {genres}"
ITEM_TEXT_TEMPLATE_NO_YEAR = "{title}; genres: {genres}"
GENRE_SEPARATOR = ", "
FEATURE_FILES = ("text_feat.npy", "genre_feat.npy")
OUTPUT_FILES = (
  f"{DATASET_NAME}.inter",
  *FEATURE_FILES,
  "genre_tokens.npy",
  "genres.json",
  "item_text.tsv",
  USER_FILE,
  ITEM_FILE,
)
DEFAULT_ENCODER = f"all-MiniLM-L6-v2 (MiniLMEncoder.pretrained, {assets.PACKAGE}=={assets.VERSION})"

# Columns read from each atomic file (by name, the part of the header field before the colon).
_INTER_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_ITEM_COLUMNS = ("item_id", "movie_title", "release_year", "class")
_MAX_ID_DIGITS = 9  # ids are stored as int32 downstream
_MAX_TIME_DIGITS = 18  # seconds since 1970, stored as int64


class TextEncoder(Protocol):
  """What `prepare_ml100k` needs of a text encoder (`MiniLMEncoder` is one)."""

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, object]: ...


# ---------------------------------------------------------------------------------------------
# Fetching the source files.


def default_cache_dir() -> pathlib.Path:
  """`$ALIGNREC_CACHE/recbole`, else `~/.cache/alignrec_jax/recbole` (beside the MiniLM cache)."""
  return downloads.cache_dir("recbole")


def fetch_recbole_wheel(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
  """The path of the `recbole==1.2.1` wheel in the cache, downloaded by pip if not there yet.

  Args:
    cache_dir: where the wheel is kept; default `default_cache_dir()`. Delete the wheel to fetch
      it again.

  Returns:
    The wheel's path.

  Raises:
    AssetError: pip failed or did not produce exactly one wheel; the message gives the
      command to run by hand.
  """
  directory = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
  cached = sorted(directory.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
  if cached:
    return cached[0]
  return downloads.download_wheel(
    RECBOLE_REQUIREMENT,
    directory,
    hint=f"MovieLens-100k comes from the PyPI wheel of {RECBOLE_REQUIREMENT}",
  )


def read_source_files(wheel: str | os.PathLike[str]) -> tuple[str, str, str, str]:
  """The two ml-100k files of a recbole wheel: (inter text, inter name, item text, item name).

  Names are `WHEEL:MEMBER`, for error messages. The texts are checked to be UTF-8 (errors name
  the line) and have LF line ends.
  """
  wheel = pathlib.Path(wheel)
  out = []
  try:
    with zipfile.ZipFile(wheel) as archive:
      for filename in (INTER_MEMBER, ITEM_MEMBER):
        member = downloads.wheel_member(archive, wheel, filename)
        data = archive.read(member)  # the zip's CRC is checked on read
        source = f"{wheel}:{member}"
        out += [tsv.text_bytes(data, source).decode("utf-8"), source]
  except (zipfile.BadZipFile, OSError) as e:
    raise AssetError(f"{wheel}: not a readable wheel ({e}); delete it to download it again") from e
  return out[0], out[1], out[2], out[3]


# ---------------------------------------------------------------------------------------------
# Parsing the atomic files.


@dataclasses.dataclass(frozen=True)
class RawInteractions:
  """The rows of `ml-100k.inter`, in file order, with the original ids."""

  users: np.ndarray  # [n] int64
  items: np.ndarray  # [n] int64
  ratings: np.ndarray  # [n] float64
  timestamps: np.ndarray  # [n] int64, seconds

  def __len__(self) -> int:
    return int(self.users.shape[0])


@dataclasses.dataclass(frozen=True)
class MovieInfo:
  """One row of `ml-100k.item`."""

  title: str
  year: str  # as written; not always a year (see the module docstring)
  genres: tuple[str, ...]  # in file order, repeats removed
  line: int  # 1-based line in the source file, for later error messages


def _atomic_table(
  data: str | bytes, source: str, wanted: Sequence[str]
) -> tuple[tsv.Table, list[int]]:
  """Reads an atomic file (header fields `name:type`); returns it and the wanted columns' indices.

  Raises:
    DataError: the file is empty or not UTF-8, the header lacks a wanted column or repeats one, a
      line has the wrong number of fields, or there are no data rows.
  """
  if isinstance(data, str):
    # A lone surrogate cannot be UTF-8; passing it through lets the reader name its line.
    data = data.encode("utf-8", errors="surrogatepass")

  def check_header(fields: Sequence[str]) -> None:
    names = [field.partition(":")[0] for field in fields]
    missing = [c for c in wanted if c not in names]
    if missing:
      found = "\t".join(fields)[:200]
      raise DataError(
        f"{source}: line 1 (header): missing column(s) {', '.join(missing)}; "
        f"found {found!r}, expected tab-separated name:type fields including {', '.join(wanted)}"
      )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
      raise DataError(f"{source}: line 1 (header): column(s) {', '.join(repeated)} appear twice")

  table = tsv.read_table(
    data,
    source,
    expected_header=f"a header with the columns {', '.join(wanted)}",
    check_header=check_header,
  )
  if not table.num_rows:
    raise DataError(f"{source}: no data rows after the header line")
  names = [field.partition(":")[0] for field in table.header]
  return table, [names.index(c) for c in wanted]


def _ids(table: tsv.Table, column: int, label: str) -> np.ndarray:
  expected = f"an id of at most {_MAX_ID_DIGITS} decimal digits"
  return table.integers(
    column, label=label, max_digits=_MAX_ID_DIGITS, expected=expected, too_long=expected
  )


def parse_interactions(data: str | bytes, source: str) -> RawInteractions:
  """Parses `ml-100k.inter` (its text or bytes); raises `DataError` naming `source` and the line.

  Rows must have integer user and item ids, a finite rating and an integer timestamp, and each
  (user, item) pair must occur once.
  """
  table, (cu, ci, cr, ct) = _atomic_table(data, source, _INTER_COLUMNS)
  # Of two bad fields on one line, the one listed first here is reported.
  users, items, stamps, ratings = tsv.first_error(
    lambda: _ids(table, cu, "user_id"),
    lambda: _ids(table, ci, "item_id"),
    lambda: table.integers(
      ct,
      label="timestamp",
      max_digits=_MAX_TIME_DIGITS,
      expected="a non-negative integer (seconds since 1970)",
      too_long=f"a timestamp of at most {_MAX_TIME_DIGITS} digits",
    ),
    lambda: table.numbers(cr, label="rating"),
  )
  # Ids have at most 9 digits, so the keys are unique (and fit in int64).
  repeat = tsv.first_repeat(users * 10**_MAX_ID_DIGITS + items)
  if repeat is not None:
    first, second = repeat
    raise DataError(
      f"{source}: lines {first + 2} and {second + 2}: the (user_id, item_id) pair "
      f"({users[second]}, {items[second]}) appears twice; each pair must be rated "
      "once"
    )
  return RawInteractions(users, items, ratings, stamps)


def _movie_fields(
  table: tsv.Table, columns: Sequence[int]
) -> list[tuple[str, str, tuple[str, ...]]]:
  """Each row's (title, year, genres); `FieldError` on the first row without a title or a genre."""
  _, ct, cy, cg = columns
  out = []
  rows = zip(table.strings(ct), table.strings(cy), table.strings(cg), strict=True)
  for row, (title, year, classes) in enumerate(rows):
    if not title.strip():
      raise table.error(row, "column movie_title: empty title")
    genres = tuple(dict.fromkeys(classes.split()))  # keeps the first of any repeated genre
    if not genres:
      raise table.error(
        row,
        "column class: no genre (expected space-separated genre names; "
        "ml-100k writes 'unknown' when there is none)",
      )
    out.append((title.strip(), year.strip(), genres))
  return out


def parse_items(data: str | bytes, source: str) -> dict[int, MovieInfo]:
  """Parses `ml-100k.item` (its text or bytes) into original item id -> `MovieInfo`.

  Every row needs an integer id (each once), a non-empty title and at least one genre; a bad row
  raises `DataError` naming `source` and the line.
  """
  table, columns = _atomic_table(data, source, _ITEM_COLUMNS)
  ids, fields = tsv.first_error(
    lambda: _ids(table, columns[0], "item_id"), lambda: _movie_fields(table, columns)
  )
  repeat = tsv.first_repeat(ids)
  if repeat is not None:
    first, second = repeat
    raise DataError(
      f"{source}: lines {first + 2} and {second + 2}: item_id {ids[second]} appears twice"
    )
  return {
    item: MovieInfo(title=title, year=year, genres=genres, line=row + 2)
    for row, (item, (title, year, genres)) in enumerate(zip(ids.tolist(), fields, strict=True))
  }


def item_text(title: str, year: str, genres: Sequence[str]) -> str:
  """An item's text: `ITEM_TEXT_TEMPLATE`, without " (year)" unless the year is four digits."""
  joined = GENRE_SEPARATOR.join(genres)
  if len(year) == 4 and year.isascii() and year.isdecimal():
    return ITEM_TEXT_TEMPLATE.format(title=title, year=year, genres=joined)
  return ITEM_TEXT_TEMPLATE_NO_YEAR.format(title=title, genres=joined)


# ---------------------------------------------------------------------------------------------
# Conversion to MMRec's layout.


@dataclasses.dataclass(frozen=True)
class MovieLensData:
  """ml-100k with dense ids, split, and its item content, ready to be written.

  Interaction arrays are sorted by user, then timestamp, then item (the order of the file).

  Attributes:
    user_ids: original user id of each dense user [U] int64 (increasing).
    item_ids: original item id of each dense item [I] int64 (increasing).
    users, items: dense ids [n] int64.
    ratings: [n] float64.
    timestamps: [n] int64.
    labels: x_label [n] int64 (0 train, 1 valid, 2 test).
    texts: item texts [I], `item_text` of each item.
    titles: item titles [I], as the item file writes them.
    genres: the genre vocabulary (genre id -> name).
    genre_feat: multi-hot [I, G] float32.
    genre_tokens: [I, max genres per item] int32 genre ids, increasing, padded with -1.
    unrated_items: items of the item file that no interaction mentions (left out).
  """

  user_ids: np.ndarray
  item_ids: np.ndarray
  users: np.ndarray
  items: np.ndarray
  ratings: np.ndarray
  timestamps: np.ndarray
  labels: np.ndarray
  texts: list[str]
  titles: list[str]
  genres: list[str]
  genre_feat: np.ndarray
  genre_tokens: np.ndarray
  unrated_items: int

  @property
  def num_users(self) -> int:
    return int(self.user_ids.shape[0])

  @property
  def num_items(self) -> int:
    return int(self.item_ids.shape[0])

  def counts(self) -> dict[str, int]:
    """Users, items, interactions, per-split sizes and feature sizes, for logs and meta.json."""
    train = self.labels == 0
    return {
      "users": self.num_users,
      "items": self.num_items,
      "interactions": int(self.users.shape[0]),
      "train": int(train.sum()),
      "valid": int((self.labels == 1).sum()),
      "test": int((self.labels == 2).sum()),
      "genres": len(self.genres),
      "max_genres_per_item": int(self.genre_tokens.shape[1]),
      "unrated_items_dropped": self.unrated_items,
      "items_without_train": self.num_items - int(np.unique(self.items[train]).size),
    }


def chronological_split(
  users: np.ndarray, items: np.ndarray, timestamps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """MMRec's per-user split sizes applied in time order; returns (order, labels).

  Args:
    users, items: dense ids [n] (items ordered as the original ids, so ties follow them).
    timestamps: [n].

  Returns:
    order: the permutation sorting the rows by (user, timestamp, item) [n].
    labels: x_label of each row IN THAT ORDER [n]: each user's earliest rows train, then valid,
      then test, with `mmrec_split_sizes` of the user's count.
  """
  order = np.lexsort((items, timestamps, users))
  sorted_users = users[order]
  counts = np.bincount(users)
  train, valid, _ = mmrec_split_sizes(counts)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank = np.arange(len(order)) - starts[sorted_users]  # position within the user's timeline
  labels = np.where(
    rank < train[sorted_users], 0, np.where(rank < train[sorted_users] + valid[sorted_users], 1, 2)
  )
  return order, labels.astype(np.int64)


def convert(
  raw: RawInteractions,
  movies: dict[int, MovieInfo],
  *,
  inter_source: str = "inter",
  item_source: str = "item",
) -> MovieLensData:
  """Dense ids, the chronological MMRec split and the item content (see the module docstring).

  Raises:
    DataError: an interaction's item is missing from the item file, or a user has fewer than 3
      interactions (MMRec's rule needs one each for train, valid and test).
  """
  known = np.array(sorted(movies), dtype=np.int64)
  missing = ~np.isin(raw.items, known)
  if missing.any():
    row = int(np.argmax(missing))
    raise DataError(
      f"{inter_source}: line {row + 2}: item_id {raw.items[row]} is not in {item_source}"
    )
  # np.unique sorts, so dense ids follow the original ids' order.
  user_ids, users = np.unique(raw.users, return_inverse=True)
  item_ids, items = np.unique(raw.items, return_inverse=True)
  users, items = users.reshape(-1), items.reshape(-1)
  counts = np.bincount(users)
  if counts.min() < 3:
    u = int(np.argmin(counts))
    row = int(np.argmax(users == u))
    raise DataError(
      f"{inter_source}: line {row + 2}: user_id {user_ids[u]} has only "
      f"{counts[u]} interaction(s); MMRec's split needs at least 3 per user (one "
      "each for train, valid and test)"
    )
  order, labels = chronological_split(users, items, raw.timestamps)

  info = [movies[int(i)] for i in item_ids]
  genres = sorted({g for m in info for g in m.genres})
  genre_id = {g: k for k, g in enumerate(genres)}
  width = max(len(m.genres) for m in info)
  genre_tokens = np.full((len(info), width), -1, np.int32)
  genre_feat = np.zeros((len(info), len(genres)), np.float32)
  for row, m in enumerate(info):
    ids = sorted(genre_id[g] for g in m.genres)
    genre_tokens[row, : len(ids)] = ids
    genre_feat[row, ids] = 1.0
  return MovieLensData(
    user_ids=user_ids.astype(np.int64),
    item_ids=item_ids.astype(np.int64),
    users=users[order].astype(np.int64),
    items=items[order].astype(np.int64),
    ratings=raw.ratings[order],
    timestamps=raw.timestamps[order],
    labels=labels,
    texts=[item_text(m.title, m.year, m.genres) for m in info],
    titles=[m.title for m in info],
    genres=genres,
    genre_feat=genre_feat,
    genre_tokens=genre_tokens,
    unrated_items=len(movies) - len(info),
  )


def load_ml100k_source(wheel: str | os.PathLike[str]) -> MovieLensData:
  """Reads, validates and converts the ml-100k files of a recbole wheel (no text encoding)."""
  inter_text, inter_source, items_text, item_source = read_source_files(wheel)
  raw = parse_interactions(inter_text, inter_source)
  movies = parse_items(items_text, item_source)
  return convert(raw, movies, inter_source=inter_source, item_source=item_source)


# ---------------------------------------------------------------------------------------------
# Writing the folder.


def _rating_text(rating: float) -> str:
  # "4" rather than "4.0": the source's ratings are integers and MMRec's files write them so.
  return np.format_float_positional(rating, trim="-")


def _inter_text(data: MovieLensData) -> str:
  ratings = [_rating_text(r) for r in data.ratings.tolist()]
  rows = zip(
    data.users.tolist(),
    data.items.tolist(),
    ratings,
    data.timestamps.tolist(),
    data.labels.tolist(),
    strict=True,
  )
  lines = [f"{u}\t{i}\t{r}\t{t}\t{x}" for u, i, r, t, x in rows]
  return "userID\titemID\trating\ttimestamp\tx_label\n" + "\n".join(lines) + "\n"


def _encode_texts(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
  embeddings = np.asarray(encoder.encode(texts)[0])
  if embeddings.ndim != 2 or embeddings.shape[0] != len(texts) or embeddings.shape[1] < 1:
    raise ValueError(
      f"the text encoder returned shape {embeddings.shape} for {len(texts)} "
      "texts; expected [num_texts, dim]"
    )
  embeddings = embeddings.astype(np.float32)
  if not np.isfinite(embeddings).all():
    raise ValueError("the text encoder returned non-finite values")
  return embeddings


def _encoder_identity(encoder: TextEncoder | None) -> str:
  """What the text features were computed with, for meta.json (a changed encoder redoes them)."""
  if encoder is None:
    return DEFAULT_ENCODER
  name = getattr(encoder, "name", None)
  return str(name) if name else f"{type(encoder).__module__}.{type(encoder).__qualname__}"


def _identity(encoder: TextEncoder | None) -> dict:
  """The fields of meta.json that must match for an existing folder to be reused."""
  return {
    "dataset": DATASET_NAME,
    "recipe_version": RECIPE_VERSION,
    "source_package": RECBOLE_REQUIREMENT,
    "text_encoder": _encoder_identity(encoder),
  }


def _read_meta(folder: pathlib.Path) -> dict | None:
  try:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None  # missing or unreadable: the folder is not a finished preparation
  return meta if isinstance(meta, dict) else None


def is_prepared(folder: str | os.PathLike[str], encoder: TextEncoder | None = None) -> bool:
  """Whether `folder` holds a finished preparation with this recipe, source and encoder."""
  folder = pathlib.Path(folder)
  meta = _read_meta(folder)
  if meta is None:
    return False
  same = all(meta.get(k) == v for k, v in _identity(encoder).items())
  return same and all((folder / f).is_file() for f in OUTPUT_FILES)


def _recipe() -> dict:
  return {
    "interactions": "every rating of ml-100k.inter is one interaction (no filtering)",
    "ids": "users and items numbered from 0 in increasing order of their original ids; only "
    "items that appear in the interactions",
    "split": "MMRec's per-user sizes (n < 10: n-2/1/1; else valid = int(0.2n)//2, test = "
    "int(0.2n) - valid) applied CHRONOLOGICALLY: per user sorted by timestamp, ties "
    "by item id, earliest = train, then valid, latest = test (MMRec shuffles instead)",
    "text_template": ITEM_TEXT_TEMPLATE,
    "text_template_without_year": ITEM_TEXT_TEMPLATE_NO_YEAR,
    "genre_separator": GENRE_SEPARATOR,
    "genres": "vocabulary = sorted distinct genre names; genre_feat multi-hot float32; "
    "genre_tokens int32 ids increasing, padded with -1",
  }


def _write(folder: pathlib.Path, data: MovieLensData, text_feat: np.ndarray, meta: dict) -> None:
  (folder / f"{DATASET_NAME}.inter").write_text(_inter_text(data), encoding="ascii")
  np.save(folder / "text_feat.npy", np.ascontiguousarray(text_feat, np.float32))
  np.save(folder / "genre_feat.npy", data.genre_feat)
  np.save(folder / "genre_tokens.npy", data.genre_tokens)
  (folder / "genres.json").write_text(
    json.dumps({"genres": data.genres}, indent=1) + "\n", encoding="utf-8"
  )
  rows = [f"{i}\t{t}" for i, t in enumerate(data.texts)]
  (folder / "item_text.tsv").write_text("itemID\ttext\n" + "\n".join(rows) + "\n", encoding="utf-8")
  # The original ids, as MMRec's preprocessing keeps them (data/ids.py), the titles beside.
  users = [f"{u}\t{i}" for i, u in enumerate(data.user_ids.tolist())]
  (folder / USER_FILE).write_text("user_id\tuserID\n" + "\n".join(users) + "\n", encoding="ascii")
  items = [
    f"{m}\t{i}\t{t}"
    for i, (m, t) in enumerate(zip(data.item_ids.tolist(), data.titles, strict=True))
  ]
  (folder / ITEM_FILE).write_text(
    "movie_id\titemID\ttitle\n" + "\n".join(items) + "\n", encoding="utf-8"
  )
  # Last, so that a folder with a meta.json is a complete one.
  (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _replace_folder(tmp: pathlib.Path, out: pathlib.Path) -> None:
  """Moves the finished `tmp` to `out`, replacing an old preparation there."""
  if not out.exists():
    os.replace(tmp, out)
    return
  # A folder is only replaced when it is empty or one of ours, never a user's unrelated folder.
  meta = _read_meta(out)
  ours = meta is not None and meta.get("dataset") == DATASET_NAME
  if not ours and (not out.is_dir() or any(out.iterdir())):
    raise DataError(
      f"{out}: exists and is not an ml100k folder written by "
      "prepare_ml100k (no matching meta.json); choose another folder or "
      "remove it"
    )
  old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}")
  os.replace(out, old)
  os.replace(tmp, out)
  shutil.rmtree(old, ignore_errors=True)


def prepare_ml100k(
  folder: str | os.PathLike[str],
  *,
  cache_dir: str | os.PathLike[str] | None = None,
  encoder: TextEncoder | None = None,
) -> str:
  """Writes MovieLens-100k in MMRec's format into `folder`, unless it is there already.

  Files: `ml100k.inter` (header `userID itemID rating timestamp x_label`, grouped by user, in
  time order within a user), `text_feat.npy` [I, 384] (MiniLM), `genre_feat.npy` [I, G],
  `genre_tokens.npy` [I, max genres], `genres.json` ({"genres": [names by id]}), `item_text.tsv`
  (`itemID<TAB>text`; read it with `load_item_texts(..., comma_space=False)` to get the exact
  texts), `meta.json` (source, counts, recipe, encoder). The module docstring gives the recipe.

  Everything is written into a temporary sibling folder that is renamed to `folder` at the end,
  so `folder` is always either complete or absent (or the previous preparation).

  Args:
    folder: the output folder. Reused as it is when its meta.json matches this recipe, source and
      encoder and every file is present; replaced when it is an older ml100k preparation; an
      existing folder with anything else in it is an error.
    cache_dir: where the recbole wheel is kept (`fetch_recbole_wheel`); the MiniLM weights use
      their own cache (`assets.default_cache_dir()`).
    encoder: the text encoder, anything with `encode(texts) -> (array [n, d], _)`; default
      `MiniLMEncoder.pretrained()`. Its `name` attribute (else its class) is recorded in the meta
      and a different one redoes the folder.

  Returns:
    The folder, for `load_mmrec(folder, feature_files=FEATURE_FILES)`.

  Raises:
    AssetError: the wheel (or the MiniLM weights) could not be fetched.
    DataError: the source files are malformed (the message names the file and line).
    DataError: `folder` exists and is not an ml100k preparation.
  """
  out = pathlib.Path(folder).expanduser()
  if is_prepared(out, encoder):
    return str(out)
  start = time.perf_counter()
  wheel = fetch_recbole_wheel(cache_dir)
  data = load_ml100k_source(wheel)
  identity = _identity(encoder)
  if encoder is None:
    from alignrec_jax.text.minilm import MiniLMEncoder  # jax/flax only when encoding for real

    encoder = MiniLMEncoder.pretrained()
  text_feat = _encode_texts(encoder, data.texts)

  meta = dict(identity)
  meta["source"] = {
    "package": RECBOLE_REQUIREMENT,
    "wheel": wheel.name,
    "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
    "members": [INTER_MEMBER, ITEM_MEMBER],
    "terms": "MovieLens data (GroupLens): research use, no redistribution",
  }
  meta["counts"] = data.counts()
  meta["recipe"] = _recipe()
  meta["files"] = list(OUTPUT_FILES)
  meta["feature_files"] = list(FEATURE_FILES)
  meta["text_dim"] = int(text_feat.shape[1])
  meta["seconds"] = round(time.perf_counter() - start, 2)

  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
  try:
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the data folder may be shared
    _write(tmp, data, text_feat, meta)
    _replace_folder(tmp, out)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return str(out)
