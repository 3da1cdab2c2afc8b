"""Early stopping exactly as MMRec's trainer: strict improvement, stop after `patience` misses."""

import json

from alignrec_jax.training.early_stopping import EarlyStopping


def _results(recall, ndcg=0.0, test=0.0):
  """One epoch's evaluation, as the trainer passes it: metrics per split."""
  return {"valid": {"recall@20": recall, "ndcg@20": ndcg}, "test": {"recall@20": test}}


def test_stops_on_the_patience_plus_first_epoch_without_strict_improvement():
  stopper = EarlyStopping(patience=3)
  scores = [0.1, 0.2, 0.2, 0.15, 0.2, 0.19]  # 0.2 again is not an improvement
  stops = [stopper.update(epoch, _results(s, test=epoch)) for epoch, s in enumerate(scores)]
  assert stops == [False, False, False, False, False, True]
  assert stopper.best_epoch == 1 and stopper.best_metrics == _results(0.2, test=1)
  assert stopper.best_score == 0.2


def test_improvement_resets_the_counter_and_state_round_trips():
  stopper = EarlyStopping(patience=1)
  assert not stopper.update(0, _results(0.3))
  assert not stopper.update(1, _results(0.2)) and not stopper.improved
  assert stopper.improves(_results(0.4)) and not stopper.improves(_results(0.3))
  assert not stopper.update(2, _results(0.4, test=0.5)) and stopper.improved
  restored = EarlyStopping.from_json(json.loads(json.dumps(stopper.to_json())))
  assert restored == stopper
  assert not restored.update(3, _results(0.1)) and restored.update(4, _results(0.1))
  assert restored.best_epoch == 2 and restored.best_metrics == _results(0.4, test=0.5)


def test_selects_on_the_configured_validation_metric():
  stopper = EarlyStopping(patience=0, metric="ndcg@20")
  assert not stopper.improved  # nothing recorded yet
  assert not stopper.update(0, _results(0.5, ndcg=0.1))
  assert not stopper.update(1, _results(0.1, ndcg=0.2)) and stopper.improved  # recall fell
  assert stopper.update(2, _results(0.9, ndcg=0.2))  # recall rose, ndcg did not: stop
  assert (stopper.best_epoch, stopper.best_score) == (1, 0.2)
