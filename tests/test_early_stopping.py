"""Early stopping exactly as MMRec's trainer: strict improvement, stop after `patience` misses."""

from alignrec_jax.early_stopping import EarlyStopping


def test_stops_on_the_patience_plus_first_epoch_without_strict_improvement():
  stopper = EarlyStopping(patience=3)
  scores = [0.1, 0.2, 0.2, 0.15, 0.2, 0.19]  # 0.2 again is not an improvement
  stops = [stopper.update(epoch, s, {"epoch": epoch}) for epoch, s in enumerate(scores)]
  assert stops == [False, False, False, False, False, True]
  assert stopper.best_epoch == 1 and stopper.best_metrics == {"epoch": 1}


def test_improvement_resets_the_counter_and_state_round_trips():
  stopper = EarlyStopping(patience=1)
  assert not stopper.update(0, 0.3, {})
  assert not stopper.update(1, 0.2, {})
  assert not stopper.update(2, 0.4, {"best": True}) and stopper.improved
  restored = EarlyStopping.from_json(stopper.to_json())
  assert restored == stopper
  assert not restored.update(3, 0.1, {}) and restored.update(4, 0.1, {})
