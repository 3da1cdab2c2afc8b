"""benchmarks/time_to_quality.py: the first epoch at the reference's quality, and its seconds."""

import json

from benchmarks import time_to_quality


def _write(folder, rows):
  folder.mkdir()
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(folder)


def test_reach_counts_seconds_to_the_first_epoch_at_the_target(tmp_path):
  run = _write(
    tmp_path / "run",
    [
      {"epoch": 0, "train_seconds": 2.0, "eval_seconds": 1.0, "valid/recall@20": 0.1},
      {"epoch": 1, "train_seconds": 9.0, "eval_seconds": 9.0, "valid/recall@20": 0.5},
      # epoch 1 replayed after an interruption: its last record counts, once
      {"epoch": 1, "train_seconds": 2.0, "eval_seconds": 1.0, "valid/recall@20": 0.2},
      {"epoch": 2, "train_seconds": 2.0, "eval_seconds": 1.0, "valid/recall@20": 0.3},
    ],
  )
  records = time_to_quality.read_records(run)
  assert [r["epoch"] for r in records] == [0, 1, 2]
  assert time_to_quality.best(records, "valid/recall@20") == 0.3
  assert time_to_quality.reach(records, "valid/recall@20", 0.2) == {"epoch": 1, "seconds": 6.0}
  assert time_to_quality.reach(records, "valid/recall@20", 0.4) == {
    "epoch": None,
    "seconds": None,
    "seconds_run": 9.0,
  }
