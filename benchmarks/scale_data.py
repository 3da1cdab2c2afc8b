"""Random datasets at the shapes of the Amazon catalogues, for timing (the scale suite).

A timing depends on the shapes (users, items, interactions, feature width) and on how the
interactions spread over items, not on whether the data can be learned. The built-in synthetic
generator draws every user's items from a softmax over all items (its cost is users x items, ~6
minutes at Electronics' size on 2 cores); this one draws them from a power law over a random item
order (Amazon's item popularity is heavy-tailed), vectorised over all interactions, in seconds.

  users, items, interactions: those of MMRec's Baby, Sports and Electronics (5-core), and ten times
    Electronics for "electronics10x";
  per user: 5 (the 5-core minimum) plus a geometric count with the preset's mean, distinct items;
  every item appears at least once (its first draw is placed in the user's first position, so it
    lands in training), so `load_mmrec` sees the whole catalogue;
  MMRec's split rule per user (`mmrec_split_sizes`), 768-d Gaussian float32 features ("feat.npy").

`prepare_shape(folder, preset)` writes the folder once (a `shape_meta.json` written last marks
it complete) and returns the config overrides that train on it.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import flags

from alignrec_jax import files
from alignrec_jax.data.dataset import Dataset, Interactions, mmrec_split_sizes
from alignrec_jax.data.prepare.synthetic import write_mmrec

# name: (users, items, interactions over all splits), MMRec's 5-core Amazon sets.
PRESETS = {
  "baby": (19_445, 7_050, 160_792),
  "sports": (35_598, 18_357, 296_337),
  "electronics": (192_403, 63_001, 1_689_188),
  "electronics10x": (1_924_030, 630_010, 16_891_880),
}
FEATURE_DIM = 768
POPULARITY_EXPONENT = 0.8  # item r (in a random order) is drawn with probability ~ r^-0.8
_VERSION = 1
_META = "shape_meta.json"


def _user_counts(rng: np.random.Generator, users: int, interactions: int) -> np.ndarray:
  extra_mean = interactions / users - 5
  counts = 5 + rng.geometric(1 / (1 + extra_mean), users) - 1
  return counts.astype(np.int64)


def _distinct_items(
  rng: np.random.Generator, users: np.ndarray, items: np.ndarray, num_items: int, cdf: np.ndarray
) -> np.ndarray:
  """Redraws every (user, item) repeat until each user's items are distinct; keeps first draws."""
  while True:
    key = users * num_items + items
    _, first = np.unique(key, return_index=True)
    repeat = np.ones(len(items), bool)
    repeat[first] = False
    if not repeat.any():
      return items
    items[repeat] = np.searchsorted(cdf, rng.random(int(repeat.sum())))


def make_shape(preset: str, seed: int = 0) -> Dataset:
  """A random dataset at the preset's shape (module docstring)."""
  num_users, num_items, interactions = PRESETS[preset]
  if num_items > num_users:
    raise ValueError(f"{preset}: the coverage rule needs at least as many users as items")
  rng = np.random.default_rng(seed)
  counts = _user_counts(rng, num_users, interactions)
  total = int(counts.sum())
  users = np.repeat(np.arange(num_users), counts)
  popularity = np.empty(num_items)
  popularity[rng.permutation(num_items)] = np.arange(1, num_items + 1) ** -POPULARITY_EXPONENT
  cdf = np.cumsum(popularity / popularity.sum())
  cdf[-1] = 1.0
  items = np.searchsorted(cdf, rng.random(total))
  # Coverage: the first interaction of num_items distinct users (random ones) gets a distinct
  # item, so every item is in training (a user's first position is always a training row).
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  chosen = rng.choice(num_users, size=num_items, replace=False)
  items[starts[chosen]] = rng.permutation(num_items)
  items = _distinct_items(rng, users, items, num_items, cdf)
  train_n, valid_n, _ = mmrec_split_sizes(counts)
  position = np.arange(total) - np.repeat(starts, counts)
  label = np.where(
    position < np.repeat(train_n, counts),
    0,
    np.where(position < np.repeat(train_n + valid_n, counts), 1, 2),
  )
  splits = [
    Interactions(users[label == x].astype(np.int32), items[label == x].astype(np.int32))
    for x in range(3)
  ]
  features = rng.standard_normal((num_items, FEATURE_DIM), dtype=np.float32)
  return Dataset(f"shape-{preset}", num_users, num_items, *splits, features={"feat": features})


def prepare_shape(folder: str, preset: str) -> dict[str, object]:
  """Writes the preset's dataset into `folder` unless it is there; returns its config overrides.

  Returns:
    The dotted fields of a stage-2 config that point it at the data (name, path, feature and
    interaction files), for `apply`.
  """
  out = pathlib.Path(folder)
  meta_path = out / _META
  identity = {"preset": preset, "version": _VERSION, "shape": list(PRESETS[preset])}
  overrides = {
    "data.name": f"shape-{preset}",
    "data.path": str(out),
    "data.features": ("feat.npy",),
    "data.inter_file": "",
    "data.synthetic_feature_dim": 0,
  }
  if meta_path.is_file() and json.loads(meta_path.read_text()).get("identity") == identity:
    return overrides
  dataset = make_shape(preset)
  write_mmrec(dataset, str(out))
  meta = {"identity": identity, "train": len(dataset.train), "valid": len(dataset.valid)}
  files.atomic_write(meta_path, json.dumps(meta) + "\n")
  return overrides


def apply(config, overrides: dict[str, object]) -> None:
  """Sets each dotted field of `overrides` on the ml_collections config."""
  for dotted, value in overrides.items():
    group, field = dotted.rsplit(".", 1)
    target = config
    for part in group.split("."):
      target = target[part]
    target[field] = value


def use_shape(config, preset: str, workdir: str) -> None:
  """Points the config at the preset's dataset (written under `workdir` once); "" leaves it."""
  if preset:
    apply(config, prepare_shape(f"{workdir}/shape_{preset}", preset))


def define_shape_flag() -> flags.FlagHolder:
  """The `--shape` flag of the benchmarks that can train on these datasets (`use_shape`)."""
  return flags.DEFINE_enum(
    "shape",
    "",
    ["", *PRESETS],
    "Train on a random dataset of this Amazon catalogue's shape (benchmarks/scale_data.py), "
    "written under --workdir once, instead of the config's data.",
  )
