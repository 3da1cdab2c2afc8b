"""benchmarks/option_quality.py: seeds' test metrics and the difference in pooled stds."""

import json

import pytest

from benchmarks import option_quality


def test_difference_in_pooled_standard_deviations():
  row = option_quality.compare([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
  assert row["reference_mean"] == 2.0 and row["option_mean"] == 4.0
  assert row["pooled_std"] == pytest.approx(1.0)
  assert row["difference_in_pooled_std"] == pytest.approx(2.0)
  # stds 1 and 3: pooled sqrt(5); one seed alone has no std
  row = option_quality.compare([1.0, 2.0, 3.0], [1.0, 4.0, 7.0])
  assert row["difference_in_pooled_std"] == pytest.approx(2.0 / 5**0.5)
  assert option_quality.compare([1.0], [2.0, 3.0])["difference_in_pooled_std"] is None


def test_reads_every_finished_run_below_a_folder(tmp_path):
  for seed, value in ((999, 0.25), (1000, 0.35)):
    run = tmp_path / f"seed_{seed}"
    run.mkdir()
    summary = {"test": {"recall@20": value, "ndcg@20": value / 2}}
    (run / "summary.json").write_text(json.dumps(summary))
  (tmp_path / "seed_1001").mkdir()  # unfinished: no summary
  values = option_quality.read_metrics(str(tmp_path), ["test/recall@20", "test/ndcg@20"])
  # in path order: seed_1000 before seed_999
  assert values == {"test/recall@20": [0.35, 0.25], "test/ndcg@20": [0.175, 0.125]}
  with pytest.raises(SystemExit, match="no finished run"):
    option_quality.read_metrics(str(tmp_path / "seed_1001"), ["test/recall@20"])
