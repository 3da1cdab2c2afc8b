"""Many stage-2 runs (experiments/runs.py): config overrides, and worker processes that die."""

import os
import time

import pytest

from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import runs
from configs import test as test_config


@pytest.mark.parametrize(
  "field, text, message",
  [
    ("optim.lrate", "1", "no such config field"),
    ("train.batch_size", "1.5", "'1.5' is not a int"),
    ("model.alignrec.knn_include_self", "yes", "'yes' is not a bool"),
  ],
)
def test_a_bad_grid_field_or_value_is_a_config_error(field, text, message):
  with pytest.raises(ConfigError, match=message):
    runs.override(test_config.get_config(), field, text)


def dying_worker(config, workdir):
  """A sweep worker for the test below: seed 2 dies (as if killed); seeds 1 and 3 finish after
  a moment, so that with two at once one of them is still running when seed 2 dies."""
  if config.seed == 2:
    os._exit(9)  # no exception, no cleanup: what the pool sees when the OOM killer strikes
  time.sleep(1.5)
  return {"valid": {"recall@20": config.seed / 10}, "test": {"recall@20": 0.0}}


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [1, 2])
def test_a_worker_that_dies_fails_only_its_own_run(tmp_path, caplog, parallel):
  caplog.set_level("INFO")
  base = test_config.get_config()
  runs_list = [runs.Run("raw", ("a.npy",), (), seed) for seed in (1, 2, 3)]
  summaries = runs.train_runs(
    runs_list, base, str(tmp_path), parallel=parallel, worker=dying_worker
  )
  assert {run.seed: s["valid"]["recall@20"] for run, s in summaries.items()} == {1: 0.1, 3: 0.3}
  assert caplog.text.count("seed 2 failed (BrokenProcessPool") == 1
  assert "seed 1 failed" not in caplog.text and "seed 3 failed" not in caplog.text
  if parallel == 2:  # whichever seed shared the pool seed 2 broke ran again on its own
    assert "a worker process died and took the pool down" in caplog.text
