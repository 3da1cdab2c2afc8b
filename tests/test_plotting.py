"""Training curves from metrics.jsonl."""

import json

import pytest

from alignrec_jax import plotting


def test_plot_run_writes_a_png(tmp_path):
  pytest.importorskip("matplotlib", reason="plotting is an optional extra")
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for epoch in (1, 0, 2):  # out of order on purpose
      f.write(json.dumps({"epoch": epoch, "loss": 1.0 / (epoch + 1), "bpr": 0.5,
                          "valid/recall@20": 0.1 * epoch, "test/recall@20": 0.1,
                          "valid/ndcg@20": 0.05, "test/ndcg@20": 0.05,
                          "train_seconds": 1.0}) + "\n")
  path = plotting.plot_run(str(tmp_path))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert [r["epoch"] for r in plotting.read_metrics(str(tmp_path))] == [0, 1, 2]


def test_empty_run_is_an_error(tmp_path):
  (tmp_path / "metrics.jsonl").write_text("")
  with pytest.raises(ValueError, match="no epochs"):
    plotting.read_metrics(str(tmp_path))
