"""Validation-based early stopping exactly as MMRec's trainer does it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass
class EarlyStopping:
  """Counts epochs without a STRICTLY better validation score; stops when it exceeds patience.

  With patience 30 the run stops on the 31st epoch in a row without improvement. The metrics
  of the best-validation epoch (validation and test) are kept: those are the reported ones.

  Attributes:
    patience: epochs without improvement that are tolerated.
    metric: the validation metric selected on, e.g. "recall@20" (read from results["valid"]).
  """

  patience: int
  metric: str = "recall@20"
  best_score: float = -math.inf
  best_epoch: int = -1
  bad_epochs: int = 0
  best_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

  def score(self, results: Mapping[str, Mapping[str, float]]) -> float:
    return results["valid"][self.metric]

  def improves(self, results: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether these results would be a new best (before `update` records them)."""
    return self.score(results) > self.best_score

  def update(self, epoch: int, results: dict[str, Any]) -> bool:
    """Records one epoch's results; returns True when training should stop."""
    if self.improves(results):
      self.best_score, self.best_epoch, self.bad_epochs = self.score(results), epoch, 0
      self.best_metrics = results
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
