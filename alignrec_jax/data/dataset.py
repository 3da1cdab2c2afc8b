"""The in-memory form of an MMRec-format dataset, shared by the loader and the generator."""

from __future__ import annotations

import dataclasses

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Interactions:
  """(user, item) pairs of one split, int32, in file order."""

  users: np.ndarray  # [n] int32
  items: np.ndarray  # [n] int32

  def __len__(self) -> int:
    return int(self.users.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
  """An MMRec-format dataset: ids are dense, 0-based; splits as given by the file's x_label.

  Attributes:
    name: dataset name (used in logs).
    num_users: users, i.e. max user id + 1 over all splits.
    num_items: items, i.e. max item id + 1 (equal to the feature row count when features exist).
    train, valid, test: the three splits. Held-out interactions of users with no training
      interaction are removed at load time (as MMRec does) and counted below.
    features: modality name -> float32 [num_items, dim] array, in the configured order.
    num_users_without_train: users that had held-out interactions but none in training.
    num_heldout_dropped: held-out interactions removed because their user has no training one.
  """

  name: str
  num_users: int
  num_items: int
  train: Interactions
  valid: Interactions
  test: Interactions
  features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  num_users_without_train: int = 0
  num_heldout_dropped: int = 0

  def split(self, name: str) -> Interactions:
    return getattr(self, name)

  def summary(self) -> str:
    feats = ", ".join(f"{k} {v.shape[1]}-d" for k, v in self.features.items()) or "none"
    return (
      f"{self.name}: {self.num_users:,} users, {self.num_items:,} items, "
      f"train/valid/test {len(self.train):,}/{len(self.valid):,}/{len(self.test):,}; "
      f"features: {feats}; users with held-out but no training interactions: "
      f"{self.num_users_without_train} ({self.num_heldout_dropped} held-out rows excluded)"
    )


def mmrec_split_sizes(n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """MMRec's per-user (train, valid, test) sizes for users with n interactions each.

  Args:
    n: [num_users] int counts, each >= 3.

  Returns:
    (train, valid, test) int arrays [num_users].
  """
  # int(0.2 * n) == n // 5 for every integer n: 0.2 as a double is slightly above 1/5, so the
  # rounded product never falls below the exact (representable) n / 5.
  held_out = n // 5
  valid = np.where(n < 10, 1, held_out // 2)
  test = np.where(n < 10, 1, held_out - held_out // 2)
  return n - valid - test, valid, test
