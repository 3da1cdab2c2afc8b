"""What a user watching a run sees: console lines per epoch, JSON lines, the final table."""

from __future__ import annotations

import json
import logging as std_logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from absl import logging

from alignrec_jax import files
from alignrec_jax.errors import AssetError, DataError

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The per-epoch records of a run's metrics.jsonl, in epoch order.

  Raises:
    DataError: the file is missing, holds no epoch yet, or has a line that is not JSON.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    raise DataError(f"{path}: not found; is {workdir} the workdir of a run?")
  records = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, start=1):
      if line.strip():
        try:
          records.append(json.loads(line))
        except ValueError:
          raise DataError(f"{path}: line {number} is not a JSON record") from None
  if not records:
    raise DataError(f"{path} holds no epochs yet")
  return sorted(records, key=lambda r: r["epoch"])


class MetricsLog:
  """Appends one JSON object per line to `path`; a resumed run first drops lines it will redo.

  A damaged last line (a run killed, or a disk filled, while writing it) is dropped with a
  warning: its epoch is redone, as it has no checkpoint. A damaged line before the last is an
  error naming the file and line.
  """

  def __init__(self, path: str, *, resume_from_epoch: int):
    self.path = path
    if not os.path.exists(path):
      return
    with open(path, encoding="utf-8", errors="replace") as f:
      lines = [line for line in f.read().split("\n") if line.strip()]
    kept = []
    for number, line in enumerate(lines, start=1):
      try:
        record = json.loads(line)
      except ValueError:
        if number < len(lines):
          raise DataError(
            f"{path}: line {number} is not a JSON record; move the file aside "
            "to resume (the checkpoints are intact)"
          ) from None
        warn(
          f"{path}: line {number} is cut short (the run was killed while writing it); it "
          "is dropped and its epoch redone"
        )
        continue
      if record.get("epoch", -1) < resume_from_epoch:
        kept.append(line + "\n")
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


class EpochProgress:
  """Progress lines while a long epoch runs: steps done, examples/s, time left.

  Called on the host at the start of each step (`epoch.make_epoch(progress=...)`); prints once
  the epoch has run `after` seconds and then at most every `every` seconds, so short epochs
  print nothing but their end-of-epoch line.
  """

  def __init__(
    self,
    stage: str,
    *,
    steps: int,
    examples_per_step: int,
    after: float = 10.0,
    every: float = 10.0,
  ):
    self.stage, self.steps, self.examples_per_step = stage, steps, examples_per_step
    self.after, self.every = after, every
    self._epoch, self._start, self._last = 0, time.perf_counter(), 0.0

  def start(self, epoch: int) -> None:
    """Marks the start of `epoch` (the loop calls it before each one)."""
    self._epoch, self._start, self._last = epoch, time.perf_counter(), 0.0

  def __call__(self, step) -> None:
    done = int(step)  # steps finished before this one
    elapsed = time.perf_counter() - self._start
    if done == 0 or elapsed < self.after or elapsed - self._last < self.every:
      return
    self._last = elapsed
    rate = done / elapsed
    log(
      f"{self.stage} epoch {self._epoch:4d}: step {done}/{self.steps}, "
      f"{rate * self.examples_per_step:,.0f} examples/s, "
      f"{(self.steps - done) / rate:.0f} s left"
    )


class TensorBoard:
  """Every number of the metrics records as a TensorBoard scalar, under WORKDIR/tensorboard.

  Through tensorboardX (no TensorFlow; the `tensorboard` extra). Tags are the records' keys
  ("valid/recall@20"; tensorboardX shows "@" as "_"), steps the epochs.
  """

  def __init__(self, workdir: str):
    try:
      from tensorboardX import SummaryWriter
    except ImportError:
      raise AssetError(
        "the tensorboard switch needs tensorboardX: pip install -e '.[tensorboard]'"
      ) from None
    self._writer = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))

  def write(self, record: Mapping[str, Any]) -> None:
    for tag, value in record.items():
      if tag != "epoch" and isinstance(value, int | float):
        self._writer.add_scalar(tag, value, record["epoch"])
    self._writer.flush()

  def __enter__(self) -> TensorBoard:
    return self

  def __exit__(self, *exc) -> None:
    self._writer.close()


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
  """Console progress (absl logging at INFO, shown by the launchers); process 0's only."""
  if jax.process_index() == 0:
    logging.info(message)


def warn(message: str) -> None:
  """Something the user should know that does not stop the run (absl logging at WARNING)."""
  if jax.process_index() == 0:
    logging.warning(message)


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


def plot_curves(workdir: str) -> None:
  """Draws WORKDIR/curves.png when matplotlib is installed; says why not otherwise."""
  from alignrec_jax.training import plotting  # matplotlib is optional; plotting imports it lazily

  try:
    log(f"training curves: {plotting.plot_run(workdir)}")
  except AssetError as e:  # matplotlib is an optional extra
    log(f"no training curves: {e}")
