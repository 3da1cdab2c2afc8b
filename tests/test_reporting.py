"""What a run reports: console filtering, epoch lines, metrics.jsonl, user errors at exit."""

import json
import logging
import os

import pytest

import alignrec_jax
from alignrec_jax.training import reporting

_PACKAGE = os.path.dirname(os.path.abspath(alignrec_jax.__file__))
_CHECKOUT = os.path.dirname(_PACKAGE)


def test_package_dir_is_the_alignrec_jax_folder():
  assert reporting.PACKAGE_DIR == _PACKAGE + os.sep


def _record(pathname: str, level: int) -> logging.LogRecord:
  return logging.LogRecord("absl", level, pathname, 1, "message", None, None)


@pytest.mark.parametrize(
  "pathname, level, shown",
  [
    (os.path.join(_PACKAGE, "training", "reporting.py"), logging.INFO, True),
    (os.path.join(_PACKAGE, "data", "dataset.py"), logging.INFO, True),
    # A virtual environment inside the checkout (the README's set-up): its path contains the
    # checkout's name, which may well be "alignrec_jax", yet it is not this package.
    (
      os.path.join(_CHECKOUT, ".venv", "lib", "site-packages", "orbax", "checkpoint_manager.py"),
      logging.INFO,
      False,
    ),
    ("/opt/alignrec_jax/.venv/lib/site-packages/orbax/atomicity.py", logging.INFO, False),
    (os.path.join(_PACKAGE + "_extra", "module.py"), logging.INFO, False),
    ("/usr/lib/python3/site-packages/orbax/atomicity.py", logging.WARNING, True),
    ("/usr/lib/python3/site-packages/orbax/atomicity.py", logging.ERROR, True),
  ],
)
def test_own_info_only(pathname, level, shown):
  assert reporting.OwnInfoOnly().filter(_record(pathname, level)) is shown


def test_epoch_line_with_and_without_evaluation():
  terms = {"bpr": 0.5, "l2": 0.00012}
  assert reporting.epoch_line("stage1", 3, terms, train_seconds=2.0, examples=5000) == (
    "stage1 epoch    3 | bpr 0.5000 l2 0.0001 | train 2.00s (2,500/s)"
  )
  results = {"valid": {"recall@20": 0.12345, "ndcg@20": 0.05}, "test": {"recall@20": 0.1}}
  line = reporting.epoch_line(
    "stage2",
    12,
    terms,
    train_seconds=0.5,
    examples=100,
    results=results,
    eval_seconds=1.25,
    improved=True,
  )
  assert line == (
    "stage2 epoch   12 | bpr 0.5000 l2 0.0001 | valid recall@20 0.1235 "
    "ndcg@20 0.0500 | test recall@20 0.1000 | train 0.50s (200/s) eval 1.25s *"
  )


def test_read_metrics_sorts_by_epoch_and_resumed_logs_drop_redone_epochs(tmp_path):
  path = tmp_path / reporting.METRICS_FILE
  log = reporting.MetricsLog(str(path), resume_from_epoch=0)
  for epoch in (1, 0, 2):
    log.write({"epoch": epoch, "loss": float(epoch)})
  assert [r["epoch"] for r in reporting.read_metrics(str(tmp_path))] == [0, 1, 2]
  reporting.MetricsLog(str(path), resume_from_epoch=2)  # epoch 2 will be redone
  assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 0]


def test_empty_run_is_an_error(tmp_path):
  (tmp_path / reporting.METRICS_FILE).write_text("")
  with pytest.raises(ValueError, match="no epochs"):
    reporting.read_metrics(str(tmp_path))
