"""The built-in synthetic dataset: deterministic, no download, learnable, in MMRec's split layout.

Generative model (all numpy, vectorised over users in chunks):
- Items live in a latent space, grouped in clusters: v_i = c_{k(i)} + spread * noise.
- Each user prefers one cluster: u = c_{k(u)} + user_noise * noise.
- A user picks `n_u` distinct items (lognormal, at least `min_user_interactions`) without
  replacement from p(i | u) = (1 - mix) softmax_i(u . v_i / temperature) + mix * pop_i, where
  pop is a power law over a random item order (Gumbel-top-k sampling does the no-replacement
  draw).
- Each modality is an informative but noisy view of the item: a random linear map of v_i, plus a
  modality-specific low-rank nuisance component, plus Gaussian noise; each has its own dim.
- MMRec's split rule per user: shuffle the user's items; n < 10 -> n-2 / 1 / 1 train / valid /
  test, otherwise valid = int(0.2 n) // 2, test = int(0.2 n) - valid, train = the rest.
- Every item is made to appear in training at least once (by swapping split labels within a user,
  or giving an unchosen item to the user most likely to pick it) whenever there are enough
  training rows to go round: no item lacks training signal, and the largest item id always
  appears in the written file (which `load_mmrec` needs to match the feature rows).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import pathlib
import time
from collections.abc import Sequence

import numpy as np

from alignrec_jax import files, schema
from alignrec_jax.data.dataset import Dataset, Interactions, mmrec_split_sizes

# Bump when the generator's output for the same arguments changes, so cached folders regenerate.
GENERATOR_VERSION = 1
META_FILE = "synthetic_meta.json"
_GENERATOR_NAME = "alignrec_jax.data.prepare.synthetic.make_synthetic"


def _modality_dims(value) -> bool:
  return len(value) > 0 and all(
    isinstance(name, str) and schema.is_int(dim) and dim >= 1 for name, dim in value
  )


@dataclasses.dataclass(frozen=True)
class Config:
  """The built-in synthetic dataset's size and seed (`config.data.synthetic`)."""

  num_users: int = schema.field(2000, "users", schema.POSITIVE_INT)
  num_items: int = schema.field(1000, "items", schema.POSITIVE_INT)
  mean_user_interactions: float = schema.field(
    30, "mean interactions per user (lognormal, heavy-tailed)", schema.POSITIVE
  )
  modality_dims: tuple = schema.field(
    (("image_feat", 256), ("text_feat", 128)),
    "(name, dim) of each content modality; each is written as NAME.npy",
    schema.Rule(_modality_dims, "a non-empty tuple of (name, dim >= 1) pairs"),
  )
  seed: int = schema.field(0, "the generator's seed", schema.Rule(schema.is_int, "an integer"))


@dataclasses.dataclass(frozen=True)
class SyntheticTruth:
  """The hidden generative parameters, for tests and oracle baselines.

  Attributes:
    user_factors: [num_users, latent_dim] float64.
    item_factors: [num_items, latent_dim] float64.
    item_clusters: [num_items] int, the cluster of each item.
    popularity: [num_items] float64, the power-law popularity distribution (sums to 1).
    temperature: softmax temperature of the affinity part.
    popularity_mix: weight of the popularity part in the choice distribution.
  """

  user_factors: np.ndarray
  item_factors: np.ndarray
  item_clusters: np.ndarray
  popularity: np.ndarray
  temperature: float
  popularity_mix: float

  def choice_probabilities(self, users: np.ndarray) -> np.ndarray:
    """p(i | u) of the generator for the given users: [len(users), num_items] float64."""
    return _choice_probabilities(
      self.user_factors[users],
      self.item_factors,
      self.popularity,
      self.temperature,
      self.popularity_mix,
    )


def _choice_probabilities(
  user_factors: np.ndarray,
  item_factors: np.ndarray,
  popularity: np.ndarray,
  temperature: float,
  popularity_mix: float,
) -> np.ndarray:
  """[users, items] mixture of the affinity softmax and the popularity distribution."""
  logits = user_factors @ item_factors.T / temperature
  logits -= logits.max(axis=1, keepdims=True)
  affinity = np.exp(logits)
  affinity /= affinity.sum(axis=1, keepdims=True)
  return (1.0 - popularity_mix) * affinity + popularity_mix * popularity[None, :]


def _interaction_counts(
  rng: np.random.Generator, num_users: int, mean: float, minimum: int, maximum: int
) -> np.ndarray:
  """Per-user interaction counts: minimum + a lognormal excess with the requested mean."""
  sigma = 0.8
  excess_mean = mean - minimum
  mu = np.log(excess_mean) - 0.5 * sigma**2  # E[exp(N(mu, sigma^2))] = excess_mean
  excess = np.floor(rng.lognormal(mu, sigma, size=num_users) + 0.5).astype(np.int64)
  return np.minimum(minimum + excess, maximum)


def _sample_items(
  rng: np.random.Generator,
  truth: SyntheticTruth,
  counts: np.ndarray,
  chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
  """Draws counts[u] distinct items per user from p(. | u); returns flat (users, items) [n]."""
  users_out, items_out = [], []
  for lo in range(0, len(counts), chunk):
    users = np.arange(lo, min(lo + chunk, len(counts)))
    probs = truth.choice_probabilities(users)
    # Gumbel-top-k: the k largest log p + Gumbel keys are a draw of k items without replacement.
    keys = np.log(probs) + rng.gumbel(size=probs.shape)
    k = int(counts[users].max())
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), axis=1), 1)
    keep = np.arange(k)[None, :] < counts[users][:, None]
    users_out.append(np.broadcast_to(users[:, None], top.shape)[keep])
    items_out.append(top[keep])
  return np.concatenate(users_out), np.concatenate(items_out)


def _split_labels(rng: np.random.Generator, users: np.ndarray, num_users: int) -> np.ndarray:
  """x_label per interaction, for interactions sorted by user: a random split within each user."""
  n = np.bincount(users, minlength=num_users)
  train, valid, _ = mmrec_split_sizes(n)
  starts = np.concatenate([[0], np.cumsum(n)[:-1]])
  # A random rank within the user plays the role of MMRec's shuffle.
  order = np.lexsort((rng.random(len(users)), users))
  rank = np.empty(len(users), dtype=np.int64)
  rank[order] = np.arange(len(users)) - starts[users[order]]
  return np.where(rank < train[users], 0, np.where(rank < train[users] + valid[users], 1, 2))


def _affinity_log_normalizers(truth: SyntheticTruth, chunk: int = 1024) -> np.ndarray:
  """log sum_i exp(u . v_i / temperature) per user: [num_users] float64 (chunked over users)."""
  out = []
  for lo in range(0, truth.user_factors.shape[0], chunk):
    logits = truth.user_factors[lo : lo + chunk] @ truth.item_factors.T / truth.temperature
    top = logits.max(axis=1)
    out.append(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))
  return np.concatenate(out)


def _cover_all_items(
  users: np.ndarray, items: np.ndarray, labels: np.ndarray, truth: SyntheticTruth
) -> None:
  """Edits (items, labels) in place so every item has a training interaction, where possible.

  Per-user counts and split sizes are unchanged: an item seen only in held-out rows swaps labels
  with a training row of the same user; an item never drawn replaces a training row of the user
  most likely to choose it. Only rows whose item has another training row are given up. Loops
  over the uncovered items only (none or a handful at sensible settings).
  """
  num_items = truth.item_factors.shape[0]
  train_count = np.bincount(items[labels == 0], minlength=num_items)
  log_norm = None
  for item in np.flatnonzero(train_count == 0):
    rows = np.flatnonzero(items == item)
    if rows.size:
      candidates = users[rows]  # users holding the item in held-out rows only
    else:
      if log_norm is None:
        log_norm = _affinity_log_normalizers(truth)
      # Users by how likely the generator makes them to pick the item (the popularity term of
      # p(item | u) is the same for every user, so the affinity term orders them).
      log_affinity = truth.user_factors @ truth.item_factors[item] / truth.temperature - log_norm
      candidates = np.argsort(-log_affinity, kind="stable")
    for k, user in enumerate(candidates):
      spare = np.flatnonzero((users == user) & (labels == 0) & (train_count[items] >= 2))
      if not spare.size:
        continue
      s = spare[0]
      train_count[items[s]] -= 1
      train_count[item] += 1
      if rows.size:
        labels[s], labels[rows[k]] = labels[rows[k]], 0
      else:
        items[s] = item
      break


def make_synthetic_with_truth(
  *,
  num_users: int = 2000,
  num_items: int = 1000,
  mean_user_interactions: float = 30.0,
  min_user_interactions: int = 5,
  modality_dims: Sequence[tuple[str, int]] = (("image_feat", 256), ("text_feat", 128)),
  latent_dim: int = 16,
  num_clusters: int = 20,
  cluster_spread: float = 0.5,
  user_noise: float = 0.5,
  temperature: float = 0.25,
  popularity_exponent: float = 1.0,
  popularity_mix: float = 0.1,
  nuisance_dim: int = 8,
  nuisance_scale: float = 1.0,
  feature_noise: float = 1.0,
  seed: int = 0,
  name: str = "synthetic",
) -> tuple[Dataset, SyntheticTruth]:
  """The built-in synthetic dataset and its hidden generative parameters. Deterministic.

  The module docstring describes the generative model; `make_synthetic` returns the dataset alone.

  Args:
    num_users: users; each has at least `min_user_interactions` interactions.
    num_items: items.
    mean_user_interactions: mean interactions per user (lognormal, heavy-tailed).
    min_user_interactions: the fewest per user (>= 3, so each user has train, valid and test).
    modality_dims: (name, dim) of each content modality, in order.
    latent_dim: dimension of the latent user/item space.
    num_clusters: item clusters in the latent space; each user prefers one.
    cluster_spread: item spread around its cluster centre (centres have norm ~1).
    user_noise: user spread around the preferred centre.
    temperature: softmax temperature of the affinity; lower = sharper preferences.
    popularity_exponent: power-law exponent of item popularity (pop_r ~ r^-exponent).
    popularity_mix: weight of popularity in the choice distribution.
    nuisance_dim: rank of each modality's item-specific nuisance component.
    nuisance_scale: scale of that component (the signal part has per-entry std ~1).
    feature_noise: std of the i.i.d. Gaussian noise added to each feature entry.
    seed: random seed; the same arguments always give the same dataset.
    name: dataset name.

  Returns:
    The dataset: num_users x num_items, splits by MMRec's rule, float32 features
    [num_items, dim] per modality.
  """
  if num_users < 1 or num_clusters < 1 or latent_dim < 1:
    raise ValueError("num_users, num_clusters and latent_dim must be >= 1")
  if min_user_interactions < 3:
    raise ValueError(
      f"min_user_interactions must be >= 3 (1 train, 1 valid, 1 test), got {min_user_interactions}"
    )
  if num_items < 2 * min_user_interactions:
    raise ValueError(f"num_items must be >= 2 * min_user_interactions, got {num_items}")
  if not mean_user_interactions > min_user_interactions:
    raise ValueError("mean_user_interactions must exceed min_user_interactions")
  names = [m for m, _ in modality_dims]
  if len(set(names)) != len(names) or any(d < 1 for _, d in modality_dims):
    raise ValueError(f"modality names must be distinct and dims >= 1, got {modality_dims}")
  rng = np.random.default_rng(seed)

  # Unit-scale latent geometry: centres have norm ~1, so u . v is ~1 within a cluster, ~0 across.
  centres = rng.standard_normal((num_clusters, latent_dim)) / np.sqrt(latent_dim)
  item_clusters = rng.integers(num_clusters, size=num_items)
  item_factors = centres[item_clusters] + cluster_spread * rng.standard_normal(
    (num_items, latent_dim)
  ) / np.sqrt(latent_dim)
  user_clusters = rng.integers(num_clusters, size=num_users)
  user_factors = centres[user_clusters] + user_noise * rng.standard_normal(
    (num_users, latent_dim)
  ) / np.sqrt(latent_dim)
  # Power law over a random order, so popularity is independent of the latent clusters.
  popularity = np.empty(num_items)
  popularity[rng.permutation(num_items)] = np.arange(1, num_items + 1) ** -popularity_exponent
  popularity /= popularity.sum()
  truth = SyntheticTruth(
    user_factors, item_factors, item_clusters, popularity, temperature, popularity_mix
  )

  counts = _interaction_counts(
    rng, num_users, mean_user_interactions, min_user_interactions, num_items // 2
  )
  users, items = _sample_items(rng, truth, counts)
  labels = _split_labels(rng, users, num_users)
  _cover_all_items(users, items, labels, truth)

  features = {}
  for modality, dim in modality_dims:
    signal = item_factors @ rng.standard_normal((latent_dim, dim))
    nuisance = (
      rng.standard_normal((num_items, nuisance_dim))
      @ rng.standard_normal((nuisance_dim, dim))
      / np.sqrt(nuisance_dim)
    )
    noise = rng.standard_normal((num_items, dim))
    features[modality] = (signal + nuisance_scale * nuisance + feature_noise * noise).astype(
      np.float32
    )

  splits = [
    Interactions(users[labels == x].astype(np.int32), items[labels == x].astype(np.int32))
    for x in range(3)
  ]
  dataset = Dataset(
    name=name,
    num_users=num_users,
    num_items=num_items,
    train=splits[0],
    valid=splits[1],
    test=splits[2],
    features=features,
  )
  return dataset, truth


def make_synthetic(**kwargs) -> Dataset:
  """The built-in synthetic dataset; arguments as `make_synthetic_with_truth`."""
  return make_synthetic_with_truth(**kwargs)[0]


def write_mmrec(dataset: Dataset, folder: str, *, inter_name: str | None = None) -> None:
  """Writes a dataset in MMRec's format, so that `load_mmrec` reads it back exactly.

  Writes `NAME.inter` (TSV, header `userID itemID rating x_label`, rating 1) and one
  `<modality>.npy` per feature (float32). Each file goes to a temporary name first and is then
  renamed, so a reader never sees a half-written file.

  Args:
    dataset: the dataset. Its splits are written grouped by user when every split is sorted by
      user (as MMRec's files are), else split after split; either way each split's order is kept.
    folder: created if missing.
    inter_name: the `.inter` file name (with or without the suffix); default `dataset.name`.
  """
  out = pathlib.Path(folder)
  out.mkdir(parents=True, exist_ok=True)
  stem = inter_name or dataset.name
  inter_path = out / (stem if stem.endswith(".inter") else f"{stem}.inter")

  splits = [dataset.split(s) for s in ("train", "valid", "test")]
  users = np.concatenate([s.users for s in splits]).astype(np.int64)
  items = np.concatenate([s.items for s in splits]).astype(np.int64)
  labels = np.concatenate([np.full(len(s), x) for x, s in enumerate(splits)])
  if all(np.all(np.diff(s.users) >= 0) for s in splits):
    order = np.argsort(users, kind="stable")  # keeps each split's order within a user
    users, items, labels = users[order], items[order], labels[order]
  lines = [
    f"{u}\t{i}\t1\t{x}"
    for u, i, x in zip(users.tolist(), items.tolist(), labels.tolist(), strict=True)
  ]
  text = "userID\titemID\trating\tx_label\n" + "\n".join(lines) + "\n"
  files.atomic_write(inter_path, text.encode("ascii"))
  for modality, array in dataset.features.items():
    arr = np.ascontiguousarray(array, dtype=np.float32)
    files.atomic_write(out / f"{modality}.npy", lambda f, a=arr: np.save(f, a))


def _generator_identity(kwargs: dict) -> dict:
  """What determines the generated files: the full argument set (defaults filled in), JSON-ready."""
  bound = inspect.signature(make_synthetic_with_truth).bind(**kwargs)
  bound.apply_defaults()
  args = dict(bound.arguments)
  args["modality_dims"] = [[m, int(d)] for m, d in args["modality_dims"]]
  # A JSON round trip normalises tuples and numpy scalars the way the stored meta holds them.
  return json.loads(
    json.dumps({"generator": _GENERATOR_NAME, "version": GENERATOR_VERSION, "kwargs": args})
  )


def prepare_synthetic(folder: str, **kwargs) -> str:
  """Writes the synthetic dataset into `folder` unless an identical one is already there.

  The folder holds `NAME.inter`, one `.npy` per modality and `synthetic_meta.json` with the
  generator arguments (written last, so an interrupted write is redone). The data is regenerated
  when the stored arguments or generator version differ, or a listed file is missing; files of the
  previous generation are removed.

  Args:
    folder: target folder (created if missing).
    **kwargs: arguments of `make_synthetic`.

  Returns:
    The folder, for `load_mmrec(folder, feature_files=[f"{m}.npy" for m, _ in modality_dims])`.
  """
  identity = _generator_identity(kwargs)
  out = pathlib.Path(folder)
  meta_path = out / META_FILE
  old = None
  if meta_path.is_file():
    try:
      old = json.loads(meta_path.read_text())
    except (OSError, ValueError):
      old = None  # unreadable meta: treat the folder as stale and regenerate
  if isinstance(old, dict):
    listed = old.get("files", [])
    same = all(old.get(k) == v for k, v in identity.items())
    if same and listed and all((out / f).is_file() for f in listed):
      return str(out)
    for f in listed:
      # Only bare names from our own meta are removed, never paths outside the folder.
      if isinstance(f, str) and f == pathlib.Path(f).name and (out / f).is_file():
        (out / f).unlink()

  start = time.perf_counter()
  dataset = make_synthetic(**kwargs)
  write_mmrec(dataset, str(out))
  written = [f"{dataset.name}.inter"] + [f"{m}.npy" for m in dataset.features]
  meta = dict(identity)
  meta["files"] = written
  meta["feature_files"] = written[1:]
  meta["stats"] = {
    "users": dataset.num_users,
    "items": dataset.num_items,
    "train": len(dataset.train),
    "valid": len(dataset.valid),
    "test": len(dataset.test),
    "seconds": round(time.perf_counter() - start, 3),
  }
  text = json.dumps(meta, indent=1) + "\n"
  files.atomic_write(meta_path, text)
  return str(out)
