"""Training curves from a run's metrics.jsonl: loss terms and validation/test metrics per epoch."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence


def read_metrics(workdir: str) -> list[dict]:
  """The per-epoch records of a run, in epoch order."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  if not records:
    raise ValueError(f"{path} holds no epochs yet")
  return sorted(records, key=lambda r: r["epoch"])


def plot_run(workdir: str, output: str | None = None, *,
             metrics: Sequence[str] = ("recall@20", "ndcg@20")) -> str:
  """Writes a PNG with the loss terms (left) and validation/test metrics (right) per epoch.

  Returns:
    The path written (default WORKDIR/curves.png).
  """
  try:
    import matplotlib  # an optional dependency, imported only here
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError as e:
    raise ImportError("plotting needs matplotlib: pip install -e '.[plot]'") from e
  records = read_metrics(workdir)
  epochs = [r["epoch"] for r in records]
  terms = [k for k in records[0] if "/" not in k and k not in ("epoch",)
           and not k.endswith("_seconds")]
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for term in terms:
    left.plot(epochs, [r[term] for r in records], label=term)
  left.set(xlabel="epoch", ylabel="loss (weighted terms)", yscale="log", title="training loss")
  left.legend(fontsize=8)
  for metric in metrics:
    for split, style in (("valid", "-"), ("test", "--")):
      right.plot(epochs, [r[f"{split}/{metric}"] for r in records], style,
                 label=f"{split} {metric}")
  right.set(xlabel="epoch", title="ranking metrics")
  right.legend(fontsize=8)
  fig.suptitle(os.path.basename(os.path.normpath(workdir)))
  fig.tight_layout()
  output = output or os.path.join(workdir, "curves.png")
  fig.savefig(output, dpi=100)
  plt.close(fig)
  return output
