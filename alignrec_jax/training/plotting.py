"""Training curves from a run's metrics.jsonl: loss terms and validation/test metrics per epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence

from alignrec_jax.errors import AssetError
from alignrec_jax.training.reporting import read_metrics

_SPLITS = ("valid", "test", "valid_short", "test_short")


def plot_run(
  workdir: str, output: str | None = None, *, metrics: Sequence[str] = ("recall@20", "ndcg@20")
) -> str:
  """Writes a PNG with the loss terms (left) and validation/test metrics (right) per epoch.

  A run without evaluation (stage 1) gets the loss panel alone.

  Returns:
    The path written (default WORKDIR/curves.png).
  """
  try:
    import matplotlib  # an optional dependency, imported only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    raise AssetError("plotting needs matplotlib: pip install -e '.[plot]'") from None
  records = read_metrics(workdir)
  epochs = [r["epoch"] for r in records]
  # Loss terms are every field but the epoch, the times and the metrics ("valid/recall@20");
  # stage 1's have slashes too ("mlm/text").
  terms = [
    k
    for k in records[0]
    if k != "epoch" and not k.endswith("_seconds") and k.partition("/")[0] not in _SPLITS
  ]
  metrics = [m for m in metrics if f"valid/{m}" in records[0]]
  fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 4), squeeze=False)
  left = axes[0, 0]
  for term in terms:
    left.plot(epochs, [r[term] for r in records], label=term)
  left.set(xlabel="epoch", ylabel="loss (weighted terms)", yscale="log", title="training loss")
  left.legend(fontsize=8)
  if metrics:
    _plot_metrics(axes[0, 1], epochs, records, metrics)
  fig.suptitle(os.path.basename(os.path.normpath(workdir)))
  fig.tight_layout()
  output = output or os.path.join(workdir, "curves.png")
  fig.savefig(output, dpi=100)
  plt.close(fig)
  return output


def _plot_metrics(right, epochs, records, metrics) -> None:
  for metric in metrics:
    for split, style in (("valid", "-"), ("test", "--")):
      right.plot(
        epochs, [r[f"{split}/{metric}"] for r in records], style, label=f"{split} {metric}"
      )
  right.set(xlabel="epoch", title="ranking metrics")
  right.legend(fontsize=8)
