"""Validation-based early stopping exactly as MMRec's trainer does it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass
class EarlyStopping:
  """Counts epochs without a STRICTLY better validation score; stops when it exceeds patience.

  With patience 30 the run stops on the 31st epoch in a row without improvement. The metrics
  of the best-validation epoch (validation and test) are kept: those are the reported ones.
  """

  patience: int
  best_score: float = -math.inf
  best_epoch: int = -1
  bad_epochs: int = 0
  best_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

  def update(self, epoch: int, score: float, metrics: dict[str, Any]) -> bool:
    """Records one epoch's validation score; returns True when training should stop."""
    if score > self.best_score:
      self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
      self.best_metrics = metrics
      return False
    self.bad_epochs += 1
    return self.bad_epochs > self.patience

  @property
  def improved(self) -> bool:
    return self.bad_epochs == 0 and self.best_epoch >= 0

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> EarlyStopping:
    return cls(**data)
