"""What the tests check of a run: how to launch one, its newest parameters, and whether two runs
are the same run bit for bit (parameters and every epoch's record, times aside)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def launch(*flags, module="launch.train", check_code=None, **kwargs):
  """Runs a launcher in a process of its own; with `check_code`, asserts its exit status and
  that it printed no traceback."""
  result = subprocess.run(
    [sys.executable, "-m", module, *flags], cwd=REPO, capture_output=True, text=True, **kwargs
  )
  if check_code is not None:
    assert result.returncode == check_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return result


def last_line(result) -> str:
  return result.stderr.strip().splitlines()[-1]


def tiny_config(max_epochs=3, **train):
  """configs/test.py, trained `max_epochs` epochs."""
  config = test_config.get_config()
  config.train.max_epochs = max_epochs
  config.train.update(train)
  return config


def params(workdir) -> tuple[int, dict]:
  """(epoch, params as NumPy) of the newest checkpoint in WORKDIR/checkpoints, restored
  without a target (plain nested dicts: enough to compare bit for bit)."""
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  epoch = manager.latest_step()
  manager.close()
  state = ocp.StandardCheckpointer().restore(
    os.path.join(workdir, "checkpoints", str(epoch), "state")
  )
  return epoch, jax.tree.map(np.asarray, state["params"])


def assert_same_params(a, b) -> None:
  flat_a, tree_a = jax.tree.flatten(a)
  flat_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(flat_a, flat_b, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def records(workdir) -> list[dict]:
  """The run's metrics.jsonl records, times left out."""
  return [
    {k: v for k, v in r.items() if not k.endswith("_seconds")}
    for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
  ]


def assert_same_run(a, b) -> None:
  """Bit-identical parameters and metrics (times aside), each epoch recorded exactly once."""
  epoch_a, params_a = params(a)
  epoch_b, params_b = params(b)
  assert epoch_a == epoch_b
  assert_same_params(params_a, params_b)
  assert records(a) == records(b)
