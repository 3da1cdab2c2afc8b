"""What a user watching a run sees: console lines per epoch, JSON lines, the final table."""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging

from alignrec_jax import files
from alignrec_jax.errors import UserError

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The per-epoch records of a run's metrics.jsonl, in epoch order."""
  path = os.path.join(workdir, METRICS_FILE)
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  if not records:
    raise ValueError(f"{path} holds no epochs yet")
  return sorted(records, key=lambda r: r["epoch"])


class MetricsLog:
  """Appends one JSON object per line to `path`; a resumed run first drops lines it will redo."""

  def __init__(self, path: str, *, resume_from_epoch: int):
    self.path = path
    if os.path.exists(path):
      with open(path) as f:
        kept = [
          line
          for line in f
          if line.strip() and json.loads(line).get("epoch", -1) < resume_from_epoch
        ]
      # Atomically: a kill while the kept lines are rewritten must not lose them.
      files.atomic_write(path, "".join(kept))

  def write(self, record: Mapping[str, Any]) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record, sort_keys=False) + "\n")


def epoch_line(
  stage: str,
  epoch: int,
  terms: Mapping[str, float],
  *,
  train_seconds: float,
  examples: int,
  results: Mapping[str, Mapping[str, float]] | None = None,
  metric: str = "recall@20",
  eval_seconds: float = 0.0,
  improved: bool = False,
) -> str:
  """One console line: the epoch, its loss terms, validation and test metrics if any, times."""
  loss = " ".join(f"{k} {v:.4f}" for k, v in terms.items())
  line = f"{stage} epoch {epoch:4d} | {loss} | "
  if results is not None:
    valid, test = results["valid"], results["test"]
    line += (
      f"valid {metric} {valid[metric]:.4f} ndcg@20 {valid['ndcg@20']:.4f} | "
      f"test {metric} {test[metric]:.4f} | "
    )
  line += f"train {train_seconds:.2f}s ({examples / train_seconds:,.0f}/s)"
  if results is not None:
    line += f" eval {eval_seconds:.2f}s" + (" *" if improved else "")
  return line


def summary_table(
  metrics: Mapping[str, Mapping[str, float]],
  *,
  ks: Sequence[int],
  prefixes: Sequence[str] = ("", "tail_"),
) -> str:
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
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class OwnInfoOnly(std_logging.Filter):
  """Our progress at INFO; other libraries (orbax is chatty) only from WARNING up."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or os.path.abspath(record.pathname).startswith(
      PACKAGE_DIR
    )


def show_progress() -> None:
  """Console set-up of the launchers: this package's INFO lines, others' warnings and errors."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(OwnInfoOnly())


def exit_on_user_error(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
  """Wraps a launcher's main: a `UserError` prints as plain lines and exits 1, no traceback."""

  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)

  return wrapped


def plot_curves(workdir: str) -> None:
  """Draws WORKDIR/curves.png when matplotlib is installed; says why not otherwise."""
  from alignrec_jax.training import plotting  # matplotlib is optional; plotting imports it lazily

  try:
    log(f"training curves: {plotting.plot_run(workdir)}")
  except ImportError as e:
    log(f"no training curves: {e}")
