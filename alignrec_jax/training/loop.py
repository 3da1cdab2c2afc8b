"""The training loop both stages run: restore or start, scanned epochs, checks, logs, summary.

A stage hands the loop a `Task`: how to make its initial `TrainState`, its jitted epoch
(`epoch.make_epoch`) with the data that epoch reads, and optionally an evaluation. The loop

  * restores the newest checkpoint of WORKDIR/checkpoints (refusing one of another format) or
    starts from the task's initial state; the epoch's key is fold_in(seed key, epoch), so a
    resumed run replays exactly the epochs an uninterrupted one would, and ends bit-identical;
  * runs epochs, stopping with `TrainingDiverged` on a NaN or Inf loss (the last good
    checkpoint is kept);
  * evaluates after each epoch when the task can, with early stopping on validation;
  * checkpoints every `checkpoint_every` epochs, at the last one and when stopping early;
  * appends one JSON line per epoch to WORKDIR/metrics.jsonl and prints one console line;
  * when the run is finished (stopped early or at `max_epochs`), writes WORKDIR/summary.json
    atomically (only a finished run has one; a resumed run removes the stale one first) and
    draws WORKDIR/curves.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
from flax.training.train_state import TrainState

from alignrec_jax import files
from alignrec_jax.errors import WorkdirError
from alignrec_jax.training import reporting
from alignrec_jax.training.checkpoint import FORMAT_VERSION, Checkpointer
from alignrec_jax.training.early_stopping import EarlyStopping

SUMMARY_FILE = "summary.json"

# evaluate(params, improves) -> {"valid": {...}, "test": {...}, ...}; `improves(results)` says
# whether those results are a new best, for work only the best epoch needs.
Evaluate = Callable[[Any, Callable[[dict], bool]], dict[str, Any]]


class TrainingDiverged(RuntimeError):
  """A loss became NaN or Inf; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class Task:
  """One stage as the loop runs it.

  Attributes:
    name: "stage 1" or "stage 2", for the console and error messages.
    init_state: key -> the initial TrainState (a fresh run's parameters and optimiser state).
    train_epoch: jitted (state, data, key) -> (state, mean loss terms); donates the state.
    data: the pytree of arrays `train_epoch` reads.
    examples_per_epoch: examples an epoch goes through (for the examples/s on the console).
    evaluate: the evaluation after each epoch, or None (no early stopping then).
  """

  name: str
  init_state: Callable[[jax.Array], TrainState]
  train_epoch: Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict[str, jax.Array]]]
  data: Any
  examples_per_epoch: int
  evaluate: Evaluate | None = None


def finite_terms(
  terms: dict[str, jax.Array], *, stage: str, epoch: int, checkpointer: Checkpointer
) -> dict[str, float]:
  """An epoch's loss terms as floats; TrainingDiverged if any is NaN or Inf."""
  values = {k: float(v) for k, v in terms.items()}
  if not all(math.isfinite(v) for v in values.values()):
    last = checkpointer.latest_epoch()
    kept = (
      "no checkpoint was written before it"
      if last is None
      else f"the checkpoint of epoch {last} in {checkpointer.directory} is the last good state"
    )
    raise TrainingDiverged(f"{stage}: non-finite loss in epoch {epoch} ({values}); {kept}")
  return values


def read_summary(workdir: str) -> dict[str, Any] | None:
  """The summary of the finished run in `workdir`, or None while it has none."""
  path = os.path.join(workdir, SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _flat(results: dict[str, dict[str, float]]) -> dict[str, float]:
  return {f"{split}/{k}": v for split, m in results.items() for k, v in m.items()}


def restore(
  init_state: Callable[[jax.Array], TrainState], workdir: str
) -> tuple[TrainState, dict[str, Any]] | None:
  """(state, meta) of the newest checkpoint in WORKDIR/checkpoints, or None if there is none.

  `init_state` (a task's) gives the state's structure to restore into.
  """
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return checkpointer.restore_latest(jax.eval_shape(init_state, jax.random.key(0)))
  finally:
    checkpointer.close()


def _restore_or_start(
  task: Task,
  workdir: str,
  checkpointer: Checkpointer,
  state: TrainState,
  *,
  config_json: str,
  early_stopping: EarlyStopping | None,
  same_config_to_resume: bool,
):
  """(state, first epoch to run, stopped already, early stopping) of a fresh or resumed run."""
  restored = checkpointer.restore_latest(state)
  if restored is None:
    return state, 0, False, early_stopping
  state, meta = restored
  if same_config_to_resume and meta["config"] != config_json:
    raise WorkdirError(
      f"{workdir} holds an unfinished {task.name} run with other settings; use "
      "another workdir (or delete that one) to train with these"
    )
  stopped = meta.get("stopped", False)
  if early_stopping is not None:
    early_stopping = EarlyStopping.from_json(meta["early_stopping"])
  reporting.log(
    f"{task.name} resumed from the checkpoint of epoch {meta['epoch']} in {workdir}"
    + ("; it had stopped early, nothing left to train" if stopped else "")
  )
  return state, meta["epoch"] + 1, stopped, early_stopping


def train(
  task: Task,
  workdir: str,
  *,
  config_json: str,
  seed: int,
  max_epochs: int,
  checkpoint_every: int = 1,
  early_stopping: EarlyStopping | None = None,
  same_config_to_resume: bool = False,
  ks: tuple[int, ...] = (),
) -> tuple[TrainState, dict[str, Any]]:
  """Runs (or resumes) the task in `workdir` until it stops early or reaches `max_epochs`.

  Args:
    task: the stage.
    workdir: checkpoints, metrics.jsonl, summary.json and curves.png go here.
    config_json: the run's config (`config.to_json()`), saved with every checkpoint and in the
      summary.
    seed: the run's seed: the initial state's key and every epoch's key derive from it.
    max_epochs: the epochs a run trains at most.
    checkpoint_every: save every this many epochs (and at the last one, and on stopping).
    early_stopping: the stopping rule (needs `task.evaluate`); None trains every epoch.
    same_config_to_resume: refuse a checkpoint saved with another config.
    ks: the cutoffs of the final table.

  Returns:
    (the last state, the summary): "epochs_run", "config", and with evaluation "best_epoch" and
    the best epoch's metrics per split ("valid", "test", ...); without, "final_terms" (the last
    epoch's loss terms).
  """
  if (early_stopping is None) != (task.evaluate is None):
    raise ValueError("early stopping needs an evaluation, and an evaluation early stopping")
  os.makedirs(workdir, exist_ok=True)
  init_key, root_key = jax.random.split(jax.random.key(seed))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    state, start_epoch, stopped, early_stopping = _restore_or_start(
      task,
      workdir,
      checkpointer,
      task.init_state(init_key),
      config_json=config_json,
      early_stopping=early_stopping,
      same_config_to_resume=same_config_to_resume,
    )
    last_epoch = start_epoch if stopped else max_epochs
    if start_epoch < last_epoch and os.path.exists(os.path.join(workdir, SUMMARY_FILE)):
      os.remove(os.path.join(workdir, SUMMARY_FILE))  # no longer a finished run
    metrics_log = reporting.MetricsLog(
      os.path.join(workdir, reporting.METRICS_FILE), resume_from_epoch=start_epoch
    )
    epoch, terms = start_epoch - 1, {}
    for epoch in range(start_epoch, last_epoch):
      # The epoch donates the state's buffers: the previous checkpoint must be fully written
      # (saves are synchronous, so this is a guard should they become asynchronous).
      checkpointer.wait()
      tick = time.perf_counter()
      state, raw_terms = task.train_epoch(state, task.data, jax.random.fold_in(root_key, epoch))
      terms = finite_terms(raw_terms, stage=task.name, epoch=epoch, checkpointer=checkpointer)
      train_seconds = time.perf_counter() - tick
      record: dict[str, Any] = {"epoch": epoch, **terms}
      results, eval_seconds = None, 0.0
      if task.evaluate is not None:
        tick = time.perf_counter()
        results = task.evaluate(state.params, early_stopping.improves)
        eval_seconds = time.perf_counter() - tick
        stopped = early_stopping.update(epoch, results)
        record.update(_flat(results))
      record["train_seconds"] = train_seconds
      if results is not None:
        record["eval_seconds"] = eval_seconds
      # The record first: a kill between the two leaves a line past the last checkpoint, which
      # the resumed run drops and writes again, rather than a checkpoint without its line.
      metrics_log.write(record)
      if stopped or (epoch + 1) % checkpoint_every == 0 or epoch + 1 == max_epochs:
        meta = {"epoch": epoch, "stopped": stopped, "config": config_json}
        if early_stopping is not None:
          meta["early_stopping"] = early_stopping.to_json()
        checkpointer.save(epoch, state, meta)
      reporting.log(
        reporting.epoch_line(
          task.name,
          epoch,
          terms,
          train_seconds=train_seconds,
          examples=task.examples_per_epoch,
          results=results,
          metric=getattr(early_stopping, "metric", ""),
          eval_seconds=eval_seconds,
          improved=early_stopping is not None and early_stopping.improved,
        )
      )
      if stopped:
        break
  finally:
    checkpointer.wait()
    checkpointer.close()

  summary: dict[str, Any] = {
    "format": FORMAT_VERSION,
    "epochs_run": epoch + 1,
    "config": json.loads(config_json),
  }
  if early_stopping is not None:
    best = early_stopping.best_metrics
    summary.update(best_epoch=early_stopping.best_epoch, **best)
    if best:
      reporting.log(
        f"{task.name}: best validation {early_stopping.metric} at epoch "
        f"{early_stopping.best_epoch} ({epoch + 1} epochs run); metrics of that "
        "epoch:\n" + reporting.summary_table(best, ks=ks)
      )
  else:
    summary["final_terms"] = terms
  files.atomic_write(os.path.join(workdir, SUMMARY_FILE), json.dumps(summary, indent=1))
  reporting.plot_curves(workdir)
  return state, summary
