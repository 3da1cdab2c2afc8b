"""Evaluation: full-ranking metrics on device, the index they read, item-kNN over features."""

from alignrec_jax.evaluation.index import (
  EvalData,
  make_eval_data,
  restrict_heldout,
  shortest_history_users,
)
from alignrec_jax.evaluation.item_knn import evaluate_item_knn
from alignrec_jax.evaluation.ranking import ScoreChunk, evaluate, evaluate_members, evaluate_scores

__all__ = [
  "EvalData",
  "ScoreChunk",
  "evaluate",
  "evaluate_members",
  "evaluate_item_knn",
  "evaluate_scores",
  "make_eval_data",
  "restrict_heldout",
  "shortest_history_users",
]
