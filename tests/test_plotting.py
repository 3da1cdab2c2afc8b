"""Training curves from metrics.jsonl."""

import json
import struct

import pytest

from alignrec_jax.training import plotting, reporting


def _write_records(workdir, records):
  with open(workdir / "metrics.jsonl", "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def _png_size(path):
  """(width, height) in pixels from a PNG's IHDR chunk."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n"
  return struct.unpack(">II", head[16:24])


def test_plot_run_writes_a_png(tmp_path):
  pytest.importorskip("matplotlib", reason="plotting is an optional extra")
  _write_records(
    tmp_path,
    [  # out of order on purpose
      {
        "epoch": epoch,
        "loss": 1.0 / (epoch + 1),
        "bpr": 0.5,
        "valid/recall@20": 0.1 * epoch,
        "test/recall@20": 0.1,
        "valid/ndcg@20": 0.05,
        "test/ndcg@20": 0.05,
        "train_seconds": 1.0,
      }
      for epoch in (1, 0, 2)
    ],
  )
  path = plotting.plot_run(str(tmp_path))
  assert path == str(tmp_path / "curves.png")
  assert _png_size(path) == (1100, 400)  # two panels: loss terms, then ranking metrics
  assert [r["epoch"] for r in reporting.read_metrics(str(tmp_path))] == [0, 1, 2]


def test_a_run_without_evaluation_gets_the_loss_panel_alone(tmp_path, monkeypatch):
  plt = pytest.importorskip("matplotlib.pyplot", reason="plotting is an optional extra")
  closed = []  # plot_run closes its figure once saved: keep it to look at
  close = plt.close
  monkeypatch.setattr(plt, "close", lambda fig=None: (closed.append(fig), close(fig)))
  # Stage 1's records: loss terms with slashes of their own, no valid/ or test/ metrics.
  _write_records(
    tmp_path,
    [
      {
        "epoch": epoch,
        "loss": 3.0 - epoch,
        "mlm/text": 2.0 - epoch / 2,
        "contrastive/image-text": 1.0 / (epoch + 1),
        "train_seconds": 2.0,
      }
      for epoch in range(3)
    ],
  )
  path = plotting.plot_run(str(tmp_path), str(tmp_path / "stage1.png"))
  assert path == str(tmp_path / "stage1.png")
  assert _png_size(path) == (600, 400)  # one panel
  (figure,) = closed
  (axes,) = figure.axes
  assert axes.get_legend_handles_labels()[1] == ["loss", "mlm/text", "contrastive/image-text"]
