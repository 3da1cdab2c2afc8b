"""The in-memory form of an MMRec-format dataset, shared by the loader and the generator."""

from __future__ import annotations

import dataclasses

import numpy as np

SPLITS = ("train", "valid", "test")


class DataError(ValueError):
  """Bad input data: the message names the file, the line or column, and what was expected."""


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
