"""The training loop both stages run: restore or start, scanned epochs, checks, logs, summary.

A stage hands the loop a `Task`: how to make its initial `TrainState`, its jitted epoch
(`epoch.make_epoch`) with the data that epoch reads, and optionally an evaluation. The loop

  * holds the workdir's lock (`files.WorkdirLock`): a second run on the same workdir stops at
    once, naming the process that holds it;
  * restores the newest readable checkpoint of WORKDIR/checkpoints (an unreadable one is moved
    aside; one of another format is refused) or starts from the task's initial state. A
    resumed run continues with the config it started with: a changed field that changes what
    is computed stops it, naming the fields, unless `allow_config_change`. The epoch's key is
    fold_in(seed key, epoch), so a resumed run replays exactly the epochs an uninterrupted one
    would, and ends bit-identical;
  * runs epochs, stopping with `TrainingDiverged` on a NaN or Inf loss (the last good
    checkpoint is kept) and warning when the loss grows a thousandfold; Ctrl-C or SIGTERM stops
    it after the running epoch, checkpointed (`interrupt.py`);
  * evaluates after each epoch when the task can, with early stopping on validation;
  * checkpoints every `checkpoint_every` epochs, at the last one and when stopping early; with
    evaluation, also the parameters of each new best validation epoch, in WORKDIR/
    checkpoints_best (whatever `checkpoint_every` is; on a tie the earlier epoch stays);
  * appends one JSON line per epoch to WORKDIR/metrics.jsonl and prints one console line;
  * when the run is finished (stopped early or at `max_epochs`), writes WORKDIR/summary.json
    atomically (only a finished run has one; a resumed run removes the stale one first) and
    draws WORKDIR/curves.png.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax.training.train_state import TrainState

from alignrec_jax import files
from alignrec_jax.errors import UserError, WorkdirError
from alignrec_jax.training import reporting
from alignrec_jax.training.checkpoint import FORMAT_VERSION, Checkpointer
from alignrec_jax.training.early_stopping import EarlyStopping
from alignrec_jax.training.interrupt import Interrupted, StopRequests
from alignrec_jax.training.parallel import is_primary

SUMMARY_FILE = "summary.json"
BEST_DIR = "checkpoints_best"  # the best validation epoch's parameters, {"params": ...}

# evaluate(params, improves) -> {"valid": {...}, "test": {...}, ...}; `improves(results)` says
# whether those results are a new best, for work only the best epoch needs.
Evaluate = Callable[[Any, Callable[[dict], bool]], dict[str, Any]]


# A warning when the loss grows by this factor over the run's first epoch (in this process).
LOSS_GROWTH_WARNING = 1e3


class TrainingDiverged(UserError):
  """A loss became NaN or Inf; the last good checkpoint is kept."""

  exit_code = 6


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
    free_fields: config fields (dotted; a trailing "." covers a whole group) that a resumed run
      may change: they do not change what the run computes (e.g. `train.max_epochs`).
    path_fields: config fields holding paths, compared by file name only, so that a moved
      workdir, dataset or clone still resumes.
    added_fields: fields added to the config after runs may have started, each with the value
      that computes what the runs before it computed: a saved config without the field reads as
      holding that value, so a library upgrade does not stop old runs resuming.
    progress: the progress lines of long epochs, which `train_epoch` calls (the loop marks
      each epoch's start).
  """

  name: str
  init_state: Callable[[jax.Array], TrainState]
  train_epoch: Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict[str, jax.Array]]]
  data: Any
  examples_per_epoch: int
  evaluate: Evaluate | None = None
  free_fields: tuple[str, ...] = ()
  path_fields: tuple[str, ...] = ()
  added_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  progress: reporting.EpochProgress | None = None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    return {
      k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()
    }
  return {prefix[:-1]: tree}


def with_added_fields(flat: dict[str, Any], added: Mapping[str, Any]) -> dict[str, Any]:
  """A flattened saved config with each field added since (`Task.added_fields`) that it lacks
  set to the value reproducing the behaviour before it."""
  return {**{k: v for k, v in added.items() if k not in flat}, **flat}


def fill_added_fields(saved: dict[str, Any], added: Mapping[str, Any]) -> dict[str, Any]:
  """A saved config (nested, as JSON) with each field added since that it lacks set to the value
  reproducing the behaviour before it, so that code reading the new field can run the old run
  (e.g. to export it)."""
  filled = json.loads(json.dumps(saved))  # a deep copy
  for dotted, value in added.items():
    *groups, field = dotted.split(".")
    target = filled
    for group in groups:
      target = target.setdefault(group, {})
    target.setdefault(field, value)
  return filled


def same_config(saved: dict[str, Any], config: dict[str, Any], added: Mapping[str, Any]) -> bool:
  """Whether a saved config (nested, as JSON) is `config`, reading fields added since it was
  saved as their earlier behaviour's values."""
  return with_added_fields(_flatten(saved), added) == _flatten(config)


def config_changes(task: Task, saved_json: str, config_json: str) -> list[str]:
  """The fields, as "field: saved -> new", where `config_json` differs from the saved config in
  a way that changes what the task computes (not its free fields; paths by file name)."""

  def comparable(field: str, value: Any) -> Any:
    if field not in task.path_fields:
      return value
    names = value if isinstance(value, list) else [value]
    return [os.path.basename(os.path.normpath(str(v))) for v in names]

  saved = with_added_fields(_flatten(json.loads(saved_json)), task.added_fields)
  new = _flatten(json.loads(config_json))
  changes = []
  for field in sorted(set(saved) | set(new)):
    if field in task.free_fields or any(
      f.endswith(".") and field.startswith(f) for f in task.free_fields
    ):
      continue
    old_value, new_value = saved.get(field, "(absent)"), new.get(field, "(absent)")
    if comparable(field, old_value) != comparable(field, new_value):
      changes.append(f"{field}: {old_value!r} -> {new_value!r}")
  return changes


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


def _warn_on_growth(
  stage: str, epoch: int, loss: float | None, first: tuple[int, float] | None
) -> tuple[int, float] | None:
  """Warns once when `loss` is LOSS_GROWTH_WARNING times the run's first; returns the first."""
  if loss is None:
    return first
  if first is None:
    return (epoch, loss)
  if first[1] > 0 and loss > LOSS_GROWTH_WARNING * first[1]:
    reporting.warn(
      f"{stage}: the loss grew from {first[1]:.4g} (epoch {first[0]}) to "
      f"{loss:.4g} (epoch {epoch}): is the learning rate too high?"
    )
    return (epoch, math.inf)  # warned: never again in this run
  return first


def _best_keeper(workdir: str, early_stopping: EarlyStopping | None):
  """The checkpointer of the best epoch's parameters (a context manager), for runs that
  evaluate; else a no-op context giving None."""
  if early_stopping is None:
    return contextlib.nullcontext()
  return Checkpointer(os.path.join(workdir, BEST_DIR), keep=1)


def _restore_or_start(
  task: Task,
  workdir: str,
  checkpointer: Checkpointer,
  state: TrainState,
  *,
  config_json: str,
  early_stopping: EarlyStopping | None,
  allow_config_change: bool,
):
  """(state, first epoch to run, stopped already, early stopping) of a fresh or resumed run."""
  changes = []

  def check_config(meta: dict[str, Any]) -> None:
    changes[:] = config_changes(task, meta["config"], config_json)
    if changes and not allow_config_change:
      raise WorkdirError(
        f"{workdir} holds a {task.name} run started with other settings; it resumes with the "
        f"settings it started with, and these differ: {'; '.join(changes)}. Rerun with those "
        "settings, use another --workdir, or pass --allow_config_change to go on with the new "
        "ones"
      )

  restored = checkpointer.restore_latest(state, check_meta=check_config)
  if restored is None:
    return state, 0, False, early_stopping
  state, meta = restored
  if changes:
    reporting.warn(f"{task.name}: resuming with changed settings: {'; '.join(changes)}")
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
  allow_config_change: bool = False,
  tensorboard: bool = False,
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
    allow_config_change: resume a run whose saved config differs in fields that change what is
      computed (they are listed in a warning); otherwise that stops with WorkdirError.
    tensorboard: also write every number of each epoch's record to WORKDIR/tensorboard.
    ks: the cutoffs of the final table.

  Returns:
    (the last state, the summary): "epochs_run", "config", and with evaluation "best_epoch" and
    the best epoch's metrics per split ("valid", "test", ...); without, "final_terms" (the last
    epoch's loss terms).
  """
  if (early_stopping is None) != (task.evaluate is None):
    raise ValueError("early stopping needs an evaluation, and an evaluation early stopping")
  init_key, root_key = jax.random.split(jax.random.key(seed))
  # Only process 0 of a multi-host job writes records; every process takes part in
  # checkpoints. Entered in order: the lock before orbax's manager, which tidies its folder.
  primary = is_primary()
  with (
    files.WorkdirLock(workdir) if primary else contextlib.nullcontext(),
    StopRequests(task.name) as stop,
    Checkpointer(os.path.join(workdir, "checkpoints")) as checkpointer,
    _best_keeper(workdir, early_stopping) as best_keeper,
    reporting.TensorBoard(workdir)
    if tensorboard and primary
    else contextlib.nullcontext() as board,
  ):
    state, start_epoch, stopped, early_stopping = _restore_or_start(
      task,
      workdir,
      checkpointer,
      task.init_state(init_key),
      config_json=config_json,
      early_stopping=early_stopping,
      allow_config_change=allow_config_change,
    )
    if best_keeper is not None:
      best_keeper.delete_after(start_epoch - 1)  # saved in epochs this run redoes
    last_epoch = start_epoch if stopped else max_epochs
    summary_path = os.path.join(workdir, SUMMARY_FILE)
    if primary and start_epoch < last_epoch and os.path.exists(summary_path):
      os.remove(summary_path)  # no longer a finished run
    metrics_path = os.path.join(workdir, reporting.METRICS_FILE)
    metrics_log = (
      reporting.MetricsLog(metrics_path, resume_from_epoch=start_epoch) if primary else None
    )
    epoch, terms, first_loss = start_epoch - 1, {}, None
    for epoch in range(start_epoch, last_epoch):
      # The epoch donates the state's buffers: the previous checkpoint must be fully written
      # (saves are synchronous, so this is a guard should they become asynchronous).
      checkpointer.wait()
      if task.progress is not None:
        task.progress.start(epoch)
      tick = time.perf_counter()
      state, raw_terms = task.train_epoch(state, task.data, jax.random.fold_in(root_key, epoch))
      terms = finite_terms(raw_terms, stage=task.name, epoch=epoch, checkpointer=checkpointer)
      train_seconds = time.perf_counter() - tick
      first_loss = _warn_on_growth(task.name, epoch, terms.get("loss"), first_loss)
      record: dict[str, Any] = {"epoch": epoch, **terms}
      results, eval_seconds = None, 0.0
      if task.evaluate is not None:
        tick = time.perf_counter()
        results = task.evaluate(state.params, early_stopping.improves)
        eval_seconds = time.perf_counter() - tick
        stopped = early_stopping.update(epoch, results)
        record.update(_flat(results))
        if early_stopping.improved:
          best_keeper.save(epoch, {"params": state.params}, {"epoch": epoch, "config": config_json})
      record["train_seconds"] = train_seconds
      if results is not None:
        record["eval_seconds"] = eval_seconds
      # The record first: a kill between the two leaves a line past the last checkpoint, which
      # the resumed run drops and writes again, rather than a checkpoint without its line.
      if metrics_log is not None:
        metrics_log.write(record)
      if board is not None:
        board.write(record)
      due = (epoch + 1) % checkpoint_every == 0 or epoch + 1 == max_epochs
      if stopped or due or stop.requested:
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
      if stop.requested and epoch + 1 < last_epoch:
        raise Interrupted(
          f"{task.name} stopped by {stop.requested} after epoch {epoch}, whose checkpoint is "
          f"saved in {workdir}: run the same command again to resume"
        )

  summary: dict[str, Any] = {
    "format": FORMAT_VERSION,
    "epochs_run": epoch + 1,
    "config": json.loads(config_json),
  }
  if early_stopping is not None:
    best = early_stopping.best_metrics
    summary.update(best_epoch=early_stopping.best_epoch, **best)
    kept = os.path.join(workdir, BEST_DIR, str(early_stopping.best_epoch))
    summary["best_checkpoint"] = kept if os.path.isdir(kept) else None
    if best:
      reporting.log(
        f"{task.name}: best validation {early_stopping.metric} at epoch "
        f"{early_stopping.best_epoch} ({epoch + 1} epochs run); metrics of that "
        "epoch:\n" + reporting.summary_table(best, ks=ks)
      )
  else:
    summary["final_terms"] = terms
  if primary:
    files.atomic_write(os.path.join(workdir, SUMMARY_FILE), json.dumps(summary, indent=1))
    reporting.plot_curves(workdir)
  return state, summary
