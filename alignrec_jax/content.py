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

import numpy as np

from alignrec_jax.data.dataset import DataError
from alignrec_jax.models.fusion import KINDS, ModalityInput, ModalitySpec

# The input normalisation of "vector" rows; the same epsilon as stage 1's regression target.
_STANDARDIZE_EPS = 1e-6


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


def parse_modalities(entries: Sequence[Sequence[str]]) -> list[tuple[str, str, str]]:
  """Checks the config's (name, kind, file) triples; returns them as tuples."""
  parsed, names = [], set()
  for entry in entries:
    if len(entry) != 3 or not all(isinstance(x, str) and x for x in entry):
      raise ValueError(f"stage-1 modality {entry!r}: expected (name, kind, file), three "
                       "non-empty strings")
    name, kind, file = entry
    if kind not in KINDS:
      raise ValueError(f"stage-1 modality {name!r}: kind {kind!r} is not one of {KINDS}")
    if name in names:
      raise ValueError(f"stage-1 modality {name!r} is named twice")
    names.add(name)
    parsed.append((name, kind, file))
  if not parsed:
    raise ValueError("no stage-1 modalities configured (config.stage1.modalities is empty)")
  return parsed


def default_cache_dir() -> pathlib.Path:
  root = os.environ.get("ALIGNREC_CACHE") or os.path.join("~", ".cache", "alignrec_jax")
  return pathlib.Path(root).expanduser() / "token_states"


def _text_states(path: pathlib.Path, num_items: int, *, max_tokens: int,
                 cache_dir: pathlib.Path | None, encoder=None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """MiniLM token states [I, L, 384] and mask [I, L] of the item texts, cached on disk."""
  from alignrec_jax.text import minilm  # tokenizers is an optional dependency

  texts = minilm.load_item_texts(path)
  if len(texts) != num_items:
    raise DataError(f"{path}: {len(texts)} item texts, expected one per item ({num_items})")
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
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, states=states, mask=mask)
    os.replace(tmp, cache)  # a reader never sees a half-written cache
  return states, mask


def _load_npy(path: pathlib.Path, num_items: int) -> np.ndarray:
  if not path.exists():
    raise DataError(f"{path}: stage-1 content file not found")
  try:
    array = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise DataError(f"{path}: not a readable .npy array ({e})") from None
  if array.ndim != 2:
    raise DataError(f"{path}: expected a 2-D array [items, ...], got shape {array.shape}")
  if array.shape[0] != num_items:
    raise DataError(f"{path}: {array.shape[0]} rows, expected one per item ({num_items})")
  return array


def _categorical(path: pathlib.Path, num_items: int) -> tuple[ModalityInput, int]:
  ids = _load_npy(path, num_items)
  if not np.issubdtype(ids.dtype, np.integer):
    raise DataError(f"{path}: categorical tokens must be integers, got dtype {ids.dtype}")
  if ids.size and ids.min() < -1:
    row = int(np.argwhere(ids < -1)[0, 0])
    raise DataError(f"{path}: row {row}: token ids must be >= 0, or -1 for padding")
  vocab = int(ids.max(initial=-1)) + 1
  if vocab == 0:
    raise DataError(f"{path}: every token is padding (-1)")
  return ModalityInput(values=ids.astype(np.int32)), vocab


def standardize_rows(values: np.ndarray) -> np.ndarray:
  """Each row to zero mean and unit variance (the "vector" input normalisation)."""
  values = values.astype(np.float32)
  mean = values.mean(axis=1, keepdims=True)
  var = values.var(axis=1, keepdims=True)
  return (values - mean) / np.sqrt(var + _STANDARDIZE_EPS)


def _vector(path: pathlib.Path, num_items: int) -> ModalityInput:
  values = _load_npy(path, num_items)
  if not np.issubdtype(values.dtype, np.floating):
    raise DataError(f"{path}: vector features must be floating point, got dtype {values.dtype}")
  bad = ~np.isfinite(values)
  if bad.any():
    row, col = (int(x) for x in np.argwhere(bad)[0])
    raise DataError(f"{path}: row {row}, column {col}: value {values[row, col]} is not finite")
  present = np.any(values != 0, axis=1)
  return ModalityInput(values=np.where(present[:, None], standardize_rows(values), 0.0),
                       present=present)


def load_content(folder: str | os.PathLike[str], modalities: Sequence[Sequence[str]], *,
                 num_items: int, text_max_tokens: int = 64, vector_tokens: int = 4,
                 cache_dir: str | os.PathLike[str] | None = None, text_encoder=None) -> Content:
  """Reads the configured modalities of `folder` (see the module docstring).

  Args:
    folder: the dataset folder; each modality's file is relative to it (or absolute).
    modalities: (name, kind, file) triples, in encoder token order.
    num_items: I; every file must have one row per item.
    text_max_tokens: MiniLM truncation of "sequence" texts, [CLS] and [SEP] included.
    vector_tokens: the tokens each "vector" modality is projected into.
    cache_dir: where MiniLM token states are cached (None: `default_cache_dir()`).
    text_encoder: a `MiniLMEncoder` to use instead of the pretrained one (tests).
  """
  folder = pathlib.Path(folder)
  cache = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  specs, inputs, lines = [], {}, []
  for name, kind, file in parse_modalities(modalities):
    path = folder / file
    if kind == "sequence":
      if path.suffix != ".tsv":
        raise DataError(f"{path}: a 'sequence' modality reads item text (.tsv itemID<TAB>text)")
      states, mask = _text_states(path, num_items, max_tokens=text_max_tokens, cache_dir=cache,
                                  encoder=text_encoder)
      inputs[name] = ModalityInput(values=states, mask=mask, present=mask.any(axis=1))
      specs.append(ModalitySpec(name, "sequence", input_dim=states.shape[2],
                                max_len=states.shape[1]))
      detail = (f"MiniLM token states, up to {states.shape[1]} tokens "
                f"(mean {mask.sum(axis=1).mean():.1f}) x {states.shape[2]}")
    elif kind == "categorical":
      inputs[name], vocab = _categorical(path, num_items)
      specs.append(ModalitySpec(name, "categorical", max_len=inputs[name].values.shape[1],
                                vocab_size=vocab))
      detail = f"{inputs[name].values.shape[1]} token slots, vocabulary {vocab}"
    else:
      inputs[name] = _vector(path, num_items)
      specs.append(ModalitySpec(name, "vector", input_dim=inputs[name].values.shape[1],
                                num_tokens=vector_tokens))
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
  inputs[name] = inp._replace(present=present)
  return dataclasses.replace(
      content, inputs=inputs,
      description=content.description + f"; {name} removed from {len(missing)} items")


def missing_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
  """The sorted ids of round(fraction * num_items) items drawn without replacement from `seed`."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction must be in [0, 1], got {fraction}")
  order = np.random.default_rng(seed).permutation(num_items)
  return np.sort(order[:round(fraction * num_items)])
