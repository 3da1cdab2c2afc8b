"""What a user watching a run sees: console lines per epoch, JSON lines, the final table."""

from __future__ import annotations

import json
import logging as std_logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging


class MetricsLog:
  """Appends one JSON object per line to `path`; a resumed run first drops lines it will redo."""

  def __init__(self, path: str, *, resume_from_epoch: int):
    self.path = path
    if os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if line.strip()
                and json.loads(line).get("epoch", -1) < resume_from_epoch]
      with open(path, "w") as f:
        f.writelines(kept)

  def write(self, record: Mapping[str, Any]) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record, sort_keys=False) + "\n")


def epoch_line(epoch: int, terms: Mapping[str, float], valid: Mapping[str, float],
               test: Mapping[str, float], *, train_seconds: float, eval_seconds: float,
               improved: bool, metric: str = "recall@20") -> str:
  """One console line: epoch, loss terms, the selection metric, times."""
  loss = " ".join(f"{k} {v:.4f}" for k, v in terms.items())
  mark = " *" if improved else ""
  return (f"epoch {epoch:4d} | {loss} | valid {metric} {valid[metric]:.4f} "
          f"ndcg@20 {valid['ndcg@20']:.4f} | test {metric} {test[metric]:.4f} | "
          f"train {train_seconds:.2f}s eval {eval_seconds:.2f}s{mark}")


def summary_table(metrics: Mapping[str, Mapping[str, float]], *, ks: Sequence[int],
                  prefixes: Sequence[str] = ("", "tail_")) -> str:
  """A table of validation and test metrics at every K (rows), e.g. of the best epoch."""
  names = ("recall", "ndcg", "precision", "map")
  width = max([10] + [len(split) + 2 for split in metrics])
  header = f"{'metric':<20}" + "".join(f"{split:>{width}}" for split in metrics)
  lines = [header, "-" * len(header)]
  for prefix in prefixes:
    for name in names:
      for k in ks:
        key = f"{prefix}{name}@{k}"
        if all(key in m for m in metrics.values()):
          lines.append(f"{key:<20}" + "".join(f"{m[key]:>{width}.4f}" for m in metrics.values()))
  return "\n".join(lines)


def log(message: str) -> None:
  """Console progress (absl logging at INFO, shown by the launchers)."""
  logging.info(message)


# This package's folder. Matched as a path prefix: a substring test would also pass every
# library installed in a virtual environment inside a checkout named alignrec_jax (the README's
# set-up), and orbax alone then writes about 2,000 lines in the main job.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class OwnInfoOnly(std_logging.Filter):
  """Our progress at INFO; other libraries (orbax is chatty) only from WARNING up."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.WARNING
            or os.path.abspath(record.pathname).startswith(_PACKAGE_DIR))


def show_progress() -> None:
  """Console set-up of the launchers: this package's INFO lines, others' warnings and errors."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(OwnInfoOnly())


def finish_run(workdir: str, summary: Mapping[str, Any]) -> None:
  """Writes WORKDIR/summary.json and, with matplotlib installed, WORKDIR/curves.png."""
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  from alignrec_jax import plotting  # matplotlib is optional; plotting imports it lazily

  try:
    log(f"training curves: {plotting.plot_run(workdir)}")
  except ImportError as e:
    log(f"no training curves: {e}")
