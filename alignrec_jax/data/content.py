"""Item content for stage 1: each modality's file turned into the encoder's token inputs.

A modality is named in the config as (name, kind, file), the file relative to the dataset folder:

- ("text", "sequence", "item_text.tsv"): raw item text (`itemID<TAB>text`), encoded by the frozen
  MiniLM sentence encoder into token-level states [I, L, 384] (truncated at `text_max_tokens`);
  the states are cached on disk, keyed by the file's contents and the truncation;
- ("genre", "categorical", "genre_tokens.npy"): integer ids [I, L], -1 = padding; the vocabulary
  is 0..max id;
- ("audio", "vector", "audio_feat.npy"): one global feature [I, D] per item, which the encoder
  projects into `vector_tokens` tokens. Each row is standardised (zero mean, unit variance over
  its D values) before it enters the encoder, the same normalisation as its reconstruction
  target, so that modalities of very different scale (VGGish rows have norm ~1,470) train
  alike. An all-zero row means "no content" and marks the modality absent for that item.

Everything is checked on load, and errors name the file and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from alignrec_jax import downloads, files, schema
from alignrec_jax.data import tsv
from alignrec_jax.data.features import load_item_array
from alignrec_jax.errors import DataError
from alignrec_jax.normalize import standardize_rows

Kind = Literal["sequence", "categorical", "vector"]
KINDS: tuple[str, ...] = ("sequence", "categorical", "vector")


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
  """One input modality of the encoder.

  Attributes:
    name: the key of this modality in the input dict.
    kind: "sequence", "categorical" or "vector".
    input_dim: D, the feature size of a "sequence" token or of a "vector" (the regression target
      size of the reconstruction head).
    max_len: the most tokens of a "sequence" or "categorical" input (size of its position table).
    vocab_size: the number of ids of a "categorical" input.
    num_tokens: how many tokens a "vector" input is projected into.
  """

  name: str
  kind: Kind
  input_dim: int = 0
  max_len: int = 0
  vocab_size: int = 0
  num_tokens: int = 1

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"modality {self.name!r}: kind {self.kind!r} not in {KINDS}")
    if self.kind in ("sequence", "vector") and self.input_dim <= 0:
      raise ValueError(f"modality {self.name!r}: {self.kind} needs input_dim > 0")
    if self.kind in ("sequence", "categorical") and self.max_len <= 0:
      raise ValueError(f"modality {self.name!r}: {self.kind} needs max_len > 0")
    if self.kind == "categorical" and self.vocab_size <= 0:
      raise ValueError(f"modality {self.name!r}: categorical needs vocab_size > 0")
    if self.kind == "vector" and self.num_tokens <= 0:
      raise ValueError(f"modality {self.name!r}: vector needs num_tokens > 0")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ModalityInput:
  """One modality's batch (a pytree: jit and lax.scan can carry it).

  Attributes:
    values: [B, L, D] float ("sequence"), [B, L] int32 with -1 = padding ("categorical"),
      [B, D] float ("vector").
    mask: [B, L] bool, True on real tokens; "sequence" only (categorical padding is id -1, a
      vector has no padding). None = every token real.
    present: [B] bool, False where the item lacks this modality altogether. None = all present.
  """

  values: jax.Array
  mask: jax.Array | None = None
  present: jax.Array | None = None


def num_tokens(spec: ModalitySpec, inp: ModalityInput) -> int:
  """L_m, the number of token slots this modality contributes for this input."""
  return spec.num_tokens if spec.kind == "vector" else inp.values.shape[1]


def token_mask(spec: ModalitySpec, inp: ModalityInput) -> jax.Array:
  """[B, L_m] bool: True on the real tokens of items where the modality is present."""
  batch = inp.values.shape[0]
  length = num_tokens(spec, inp)
  if spec.kind == "categorical":
    valid = inp.values >= 0
  elif spec.kind == "sequence" and inp.mask is not None:
    valid = inp.mask.astype(bool)
  else:
    valid = jnp.ones((batch, length), bool)
  if inp.present is not None:
    valid = valid & inp.present.astype(bool)[:, None]
  return valid


@dataclasses.dataclass(frozen=True)
class Content:
  """The encoder's view of every item: specs plus full-size numpy inputs (row i = item i).

  Attributes:
    specs: one `ModalitySpec` per modality, in the configured order.
    inputs: name -> `ModalityInput` over all items (numpy arrays).
    description: one line per modality for the log.
  """

  specs: tuple[ModalitySpec, ...]
  inputs: dict[str, ModalityInput]
  description: str

  @property
  def num_items(self) -> int:
    return int(next(iter(self.inputs.values())).values.shape[0])


@dataclasses.dataclass(frozen=True)
class Config:
  """Stage 1's item content (`config.stage1.data`)."""

  modalities: tuple = schema.field(
    (("image", "vector", "image_feat.npy"), ("text", "vector", "text_feat.npy")),
    "(name, kind, file) per modality, the file in the dataset folder; kind sequence (item "
    "text .tsv, MiniLM token states), categorical (int .npy [I, L], -1 padding) or vector "
    "(float .npy [I, D])",
  )
  text_max_tokens: int = schema.field(
    64,
    "MiniLM truncation of item texts",
    schema.Rule(
      lambda v: schema.is_int(v) and 3 <= v <= 512, "an integer in 3..512 (MiniLM's positions)"
    ),
  )


def parse_modalities(entries: Sequence[Sequence[str]]) -> list[tuple[str, str, str]]:
  """Checks the config's (name, kind, file) triples; returns them as tuples."""
  parsed, names = [], set()
  for entry in entries:
    if len(entry) != 3 or not all(isinstance(x, str) and x for x in entry):
      raise ValueError(
        f"stage-1 modality {entry!r}: expected (name, kind, file), three non-empty strings"
      )
    name, kind, file = entry
    if kind not in KINDS:
      raise ValueError(f"stage-1 modality {name!r}: kind {kind!r} is not one of {KINDS}")
    if name in names:
      raise ValueError(f"stage-1 modality {name!r} is named twice")
    names.add(name)
    parsed.append((name, kind, file))
  if not parsed:
    raise ValueError("no stage-1 modalities configured (config.stage1.data.modalities is empty)")
  return parsed


def space_after_commas(text: str) -> str:
  """`text` with each ',' followed by a space, the recipe behind the datasets' `text_feat.npy`.

  The item texts are comma-joined tags ("chill,dance,electro"). BERT's pre-tokenizer splits at
  punctuation, so this does not change MiniLM's tokens; it is kept so that the recipe is followed
  literally and encoders whose tokenizers do care see the same input.
  """
  return text.replace(",", ", ")


ITEM_TEXT_HEADER = ("itemID", "text")


def load_item_texts(
  path: str | os.PathLike[str], *, comma_space: bool = True, num_items: int | None = None
) -> list[str]:
  """Item texts from a TSV with header `itemID<TAB>text`, indexed by item id.

  Args:
    path: the file; UTF-8, one row per item, ids 0..n-1 each exactly once (in any order). The text
      is everything after the first tab, kept as is (no quoting rules).
    comma_space: apply `space_after_commas` to each text.
    num_items: the number of items, when the caller knows it: every id must then be below it and
      each of them needs a row. Default: the largest id + 1.

  Returns:
    texts[i] is item i's text.

  Raises:
    DataError: naming the file and the 1-based line (the header is line 1) of a bad row, or the
      ids of the items that have no row.
  """
  path = pathlib.Path(path)
  wanted = "<TAB>".join(ITEM_TEXT_HEADER)

  def check_header(fields: Sequence[str]) -> None:
    if tuple(fields) != ITEM_TEXT_HEADER:
      found = tsv.show("\t".join(fields), 60)
      raise DataError(f"{path}: line 1 (header): expected {wanted!r}, found {found}")

  table = tsv.read_table(
    path, expected_header=f"the header {wanted!r}", check_header=check_header, rest_in_last=True
  )
  ids = table.integers(0, expected="an item id (a non-negative integer)")
  if num_items is not None:
    outside = np.flatnonzero(ids >= num_items)
    if outside.size:
      row = int(outside[0])
      raise table.error(
        row,
        f"column itemID: item id {ids[row]} is out of range; expected ids "
        f"0..{num_items - 1} ({num_items} items)",
      )
  repeat = tsv.first_repeat(ids)
  if repeat is not None:
    first, second = repeat
    raise DataError(
      f"{path}: lines {first + 2} and {second + 2}: item id {ids[second]} appears twice"
    )
  count = num_items if num_items is not None else int(ids.max(initial=-1)) + 1
  if ids.size < count:
    # The missing ids are the gaps between the sorted distinct ids; the first few are named.
    bounds = np.concatenate([[-1], np.sort(ids), [count]]).tolist()
    gaps = np.flatnonzero(np.diff(bounds) > 1)[:10].tolist()
    shown = [i for g in gaps for i in range(bounds[g] + 1, min(bounds[g + 1], bounds[g] + 11))]
    named = ", ".join(map(str, shown[:10]))
    if count - ids.size > 10:
      named += f", ... ({count - ids.size} in all)"
    if num_items is not None:
      raise DataError(
        f"{path}: {ids.size} item texts, expected one per item ({num_items}): "
        f"item(s) {named} have no text"
      )
    last = int(np.argmax(ids))
    raise DataError(
      f"{path}: item(s) {named} have no text: ids must be 0..n-1 for n items, but "
      f"the largest id is {count - 1} (line {last + 2}) and the file has {ids.size} "
      "rows"
    )
  texts: list[str] = [""] * count
  for item, text in zip(ids.tolist(), table.strings(1), strict=True):
    texts[item] = space_after_commas(text) if comma_space else text
  return texts


def _text_states(
  path: pathlib.Path,
  num_items: int,
  *,
  max_tokens: int,
  cache_dir: pathlib.Path | None,
  encoder=None,
) -> tuple[np.ndarray, np.ndarray]:
  """MiniLM token states [I, L, 384] and mask [I, L] of the item texts, cached on disk."""
  from alignrec_jax.text import minilm  # tokenizers is an optional dependency

  texts = load_item_texts(path, num_items=num_items)
  digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
  cache = None
  if cache_dir is not None:
    cache = cache_dir / f"{path.stem}-{digest}-{max_tokens}.npz"
    if cache.exists():
      with np.load(cache) as saved:
        return saved["states"], saved["mask"]
  encoder = encoder or minilm.MiniLMEncoder.pretrained()
  states, mask = encoder.encode_tokens(texts, max_length=max_tokens)
  if cache is not None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(cache, lambda f: np.savez(f, states=states, mask=mask))
  return states, mask


def _categorical(path: pathlib.Path, num_items: int) -> tuple[ModalityInput, int]:
  ids = load_item_array(path, num_items=num_items, kind="int")
  if ids.size and ids.min() < -1:
    row = int(np.argwhere(ids < -1)[0, 0])
    raise DataError(f"{path}: row {row}: token ids must be >= 0, or -1 for padding")
  vocab = int(ids.max(initial=-1)) + 1
  if vocab == 0:
    raise DataError(f"{path}: every token is padding (-1)")
  return ModalityInput(values=ids.astype(np.int32)), vocab


def _vector(path: pathlib.Path, num_items: int) -> ModalityInput:
  values = load_item_array(path, num_items=num_items, kind="float")
  present = np.any(values != 0, axis=1)
  return ModalityInput(
    values=np.where(present[:, None], standardize_rows(values), 0.0), present=present
  )


def load_content(
  folder: str | os.PathLike[str],
  modalities: Sequence[Sequence[str]],
  *,
  num_items: int,
  text_max_tokens: int = 64,
  vector_tokens: int = 4,
  cache_dir: str | os.PathLike[str] | None = None,
  text_encoder=None,
) -> Content:
  """Reads the configured modalities of `folder` (see the module docstring).

  Args:
    folder: the dataset folder; each modality's file is relative to it (or absolute).
    modalities: (name, kind, file) triples, in encoder token order.
    num_items: I; every file must have one row per item.
    text_max_tokens: MiniLM truncation of "sequence" texts, [CLS] and [SEP] included.
    vector_tokens: the tokens each "vector" modality is projected into.
    cache_dir: where MiniLM token states are cached (None: $ALIGNREC_CACHE/token_states or
      ~/.cache/alignrec_jax/token_states).
    text_encoder: a `MiniLMEncoder` to use instead of the pretrained one (tests).
  """
  folder = pathlib.Path(folder)
  cache = pathlib.Path(cache_dir) if cache_dir else downloads.cache_dir("token_states")
  specs, inputs, lines = [], {}, []
  for name, kind, file in parse_modalities(modalities):
    path = folder / file
    if kind == "sequence":
      if path.suffix != ".tsv":
        raise DataError(f"{path}: a 'sequence' modality reads item text (.tsv itemID<TAB>text)")
      states, mask = _text_states(
        path, num_items, max_tokens=text_max_tokens, cache_dir=cache, encoder=text_encoder
      )
      inputs[name] = ModalityInput(values=states, mask=mask, present=mask.any(axis=1))
      specs.append(
        ModalitySpec(name, "sequence", input_dim=states.shape[2], max_len=states.shape[1])
      )
      detail = (
        f"MiniLM token states, up to {states.shape[1]} tokens "
        f"(mean {mask.sum(axis=1).mean():.1f}) x {states.shape[2]}"
      )
    elif kind == "categorical":
      inputs[name], vocab = _categorical(path, num_items)
      specs.append(
        ModalitySpec(name, "categorical", max_len=inputs[name].values.shape[1], vocab_size=vocab)
      )
      detail = f"{inputs[name].values.shape[1]} token slots, vocabulary {vocab}"
    else:
      inputs[name] = _vector(path, num_items)
      specs.append(
        ModalitySpec(
          name, "vector", input_dim=inputs[name].values.shape[1], num_tokens=vector_tokens
        )
      )
      detail = f"{inputs[name].values.shape[1]}-d vector -> {vector_tokens} tokens"
    absent = num_items - int(np.sum(_present(inputs[name])))
    lines.append(f"{name} ({kind}, {file}): {detail}; absent for {absent} items")
  return Content(specs=tuple(specs), inputs=inputs, description="; ".join(lines))


def _present(inp: ModalityInput) -> np.ndarray:
  rows = inp.values.shape[0]
  present = np.ones(rows, bool) if inp.present is None else np.asarray(inp.present, bool)
  if inp.values.ndim == 2 and np.issubdtype(inp.values.dtype, np.integer):
    present = present & np.any(inp.values >= 0, axis=1)
  return present


def drop_modality(content: Content, name: str, fraction: float, seed: int) -> Content:
  """`content` with modality `name` absent for a random `fraction` of the items (robustness).

  The items are the first round(fraction * I) of a permutation drawn from `seed`, so the same
  items can be zeroed in the raw features (`missing_items`).
  """
  if name not in content.inputs:
    raise ValueError(f"no modality {name!r}; have {list(content.inputs)}")
  missing = missing_items(content.num_items, fraction, seed)
  inp = content.inputs[name]
  present = _present(inp).copy()
  present[missing] = False
  inputs = dict(content.inputs)
  inputs[name] = dataclasses.replace(inp, present=present)
  return dataclasses.replace(
    content,
    inputs=inputs,
    description=content.description + f"; {name} removed from {len(missing)} items",
  )


def missing_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
  """The sorted ids of round(fraction * num_items) items drawn without replacement from `seed`."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction must be in [0, 1], got {fraction}")
  order = np.random.default_rng(seed).permutation(num_items)
  return np.sort(order[: round(fraction * num_items)])
