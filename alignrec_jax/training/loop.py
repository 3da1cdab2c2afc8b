"""The training loop every run goes through: both stages, one run or K runs vmapped together.

A stage hands the loop a `Task`: how to make its initial `TrainState`, its jitted epoch
(`epoch.make_epoch`) with the data that epoch reads, and optionally an evaluation; and the
`Run`s it trains: one, or with `Task.members` = K, K runs whose states are stacked along a
leading axis and trained by one vmapped epoch over shared data (`training/ensemble.py`). For
each run the loop

  * holds the run's workdir lock (`files.WorkdirLock`): a second process on it stops at once;
  * restores the newest readable checkpoint of WORKDIR/checkpoints (an unreadable one is moved
    aside; one of another format is refused) or starts from the task's initial state. A resumed
    run continues with the identity it started with (`record.identity`): a changed field that
    changes what is computed stops it, naming the fields, unless `allow_config_change`. The
    epoch's key is fold_in(seed key, epoch), so a resumed run replays exactly the epochs an
    uninterrupted one would, and ends bit-identical. A vmapped ensemble keeps no checkpoint
    (its runs are cheap, and a killed ensemble starts again);
  * runs epochs. A NaN or Inf loss stops a single run with `TrainingDiverged` (the last good
    checkpoint is kept); in an ensemble it stops that run alone, at its last finite state,
    while the others go on. A loss that grows a thousandfold over its first finite value draws
    a warning. Ctrl-C or SIGTERM stops after the running epoch, checkpointed (`interrupt.py`);
  * evaluates after each epoch when the task can, with early stopping on validation per run; a
    stopped run's state is kept as it was (its later updates are masked);
  * checkpoints every `checkpoint_every` epochs, at the last one and when stopping early; with
    evaluation, also the parameters of each new best validation epoch, in WORKDIR/
    checkpoints_best (whatever `checkpoint_every` is; on a tie the earlier epoch stays);
  * appends one JSON line per epoch to WORKDIR/metrics.jsonl and prints progress lines;
  * when the run is finished, writes WORKDIR/summary.json (`record.write_summary`; only a
    finished run has one, and a run that trains again removes the stale one first) and draws
    WORKDIR/curves.png.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from alignrec_jax import files
from alignrec_jax.errors import UserError, WorkdirError
from alignrec_jax.training import record, reporting
from alignrec_jax.training.checkpoint import Checkpointer
from alignrec_jax.training.early_stopping import EarlyStopping
from alignrec_jax.training.interrupt import Interrupted, StopRequests
from alignrec_jax.training.parallel import is_primary

BEST_DIR = "checkpoints_best"  # the best validation epoch's parameters, {"params": ...}

# evaluate(params, improves) -> one {"valid": {...}, "test": {...}, ...} per run;
# `improves(run index, results)` says whether those results are a new best for that run, for
# work only the best epoch needs.
Evaluate = Callable[[Any, Callable[[int, dict], bool]], list[dict[str, Any]]]

# A warning when the loss grows by this factor over the run's first epoch (in this process).
LOSS_GROWTH_WARNING = 1e3


class TrainingDiverged(UserError):
  """A loss became NaN or Inf; the last good checkpoint is kept."""

  exit_code = 6


@dataclasses.dataclass(frozen=True)
class Run:
  """One run the loop trains.

  Attributes:
    workdir: its folder: checkpoints, metrics.jsonl, summary.json and curves.png go here.
    seed: its initial state's key and every epoch's key derive from it.
    identity: what it computes (`record.identity`), saved with every checkpoint and in the
      summary.
    config: its whole config (as JSON values), saved beside the identity.
  """

  workdir: str
  seed: int
  identity: dict[str, Any]
  config: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Task:
  """One stage as the loop runs it.

  Attributes:
    name: "stage 1" or "stage 2", for the console and error messages.
    init_state: key -> the initial TrainState (a fresh run's parameters and optimiser state);
      with `members`, keys [K] -> the K runs' states stacked.
    train_epoch: jitted (state, data, key) -> (state, mean loss terms), donating the state;
      with `members`, (state, data, keys [K], active [K] bool) -> (state, terms [K] each),
      keeping the state of a run that is not active or whose loss is not finite.
    data: the pytree of arrays `train_epoch` reads.
    examples_per_epoch: examples an epoch goes through (for the examples/s on the console).
    evaluate: the evaluation after each epoch (see `Evaluate`), or None (no early stopping).
    progress: the progress lines of long epochs, which `train_epoch` calls (the loop marks
      each epoch's start).
    finish: called with the final state of a finished single run; returns what it adds to the
      summary (stage 1: its output file).
    resume_free: identity fields a resumed run may change (e.g. `train.max_epochs`).
    members: 0: one run; K: K runs vmapped together.
  """

  name: str
  init_state: Callable[[jax.Array], TrainState]
  train_epoch: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  data: Any
  examples_per_epoch: int
  evaluate: Evaluate | None = None
  progress: reporting.EpochProgress | None = None
  finish: Callable[[TrainState], dict[str, Any]] | None = None
  resume_free: tuple[str, ...] = ()
  members: int = 0


@dataclasses.dataclass
class _Tracker:
  """One run's bookkeeping in the loop."""

  run: Run
  stopping: EarlyStopping | None
  label: str
  active: bool = True
  diverged_at: int | None = None
  epochs_run: int = 0
  terms: dict[str, float] = dataclasses.field(default_factory=dict)
  first_loss: tuple[int, float] | None = None
  log: reporting.MetricsLog | None = None
  board: reporting.TensorBoard | None = None


def restore(
  init_state: Callable[[jax.Array], TrainState], workdir: str
) -> tuple[TrainState, dict[str, Any]] | None:
  """(state, meta) of the newest checkpoint in WORKDIR/checkpoints, or None if there is none.

  `init_state` (a task's) gives the state's structure to restore into.
  """
  with Checkpointer(os.path.join(workdir, "checkpoints")) as checkpointer:
    return checkpointer.restore_latest(jax.eval_shape(init_state, jax.random.key(0)))


def _finite_terms(values: dict[str, float]) -> bool:
  return all(math.isfinite(v) for v in values.values())


def _diverged(stage: str, epoch: int, values: dict[str, float], checkpointer) -> TrainingDiverged:
  last = checkpointer.latest_epoch() if checkpointer is not None else None
  kept = (
    "no checkpoint was written before it"
    if last is None
    else f"the checkpoint of epoch {last} in {checkpointer.directory} is the last good state"
  )
  return TrainingDiverged(f"{stage}: non-finite loss in epoch {epoch} ({values}); {kept}")


def _warn_on_growth(tracker: _Tracker, epoch: int, loss: float | None) -> None:
  """Warns once when `loss` is LOSS_GROWTH_WARNING times the run's first."""
  if loss is None:
    return
  first = tracker.first_loss
  if first is None:
    tracker.first_loss = (epoch, loss)
  elif first[1] > 0 and loss > LOSS_GROWTH_WARNING * first[1]:
    reporting.warn(
      f"{tracker.label}: the loss grew from {first[1]:.4g} (epoch {first[0]}) to "
      f"{loss:.4g} (epoch {epoch}): is the learning rate too high?"
    )
    tracker.first_loss = (epoch, math.inf)  # warned: never again in this run


def _flat(results: dict[str, dict[str, float]]) -> dict[str, float]:
  return {f"{split}/{k}": v for split, m in results.items() for k, v in m.items()}


def _restore_or_start(task: Task, run: Run, checkpointer: Checkpointer, state, *, allow: bool):
  """(state, first epoch to run, stopped already, saved early stopping) of one run."""
  changes: list[str] = []

  def check_identity(meta: dict[str, Any]) -> None:
    changes[:] = record.differences(meta["identity"], run.identity, free=task.resume_free)
    if changes and not allow:
      raise WorkdirError(
        f"{run.workdir} holds a {task.name} run started with other settings; it resumes with "
        f"the settings it started with, and these differ: {'; '.join(changes)}. Rerun with "
        "those settings, use another --workdir, or pass --allow_config_change to go on with "
        "the new ones"
      )

  restored = checkpointer.restore_latest(state, check_meta=check_identity)
  if restored is None:
    return state, 0, False, None
  state, meta = restored
  if changes:
    reporting.warn(f"{task.name}: resuming with changed settings: {'; '.join(changes)}")
  stopped = meta.get("stopped", False)
  reporting.log(
    f"{task.name} resumed from the checkpoint of epoch {meta['epoch']} in {run.workdir}"
    + ("; it had stopped early, nothing left to train" if stopped else "")
  )
  return state, meta["epoch"] + 1, stopped, meta.get("early_stopping")


def _keys(runs: Sequence[Run], vmapped: bool) -> tuple[jax.Array, jax.Array]:
  """(init keys, root keys): each run's split of key(seed), stacked for an ensemble."""
  if not vmapped:
    return tuple(jax.random.split(jax.random.key(runs[0].seed)))
  seeds = jnp.asarray([r.seed for r in runs])
  return tuple(jax.vmap(jax.random.split)(jax.vmap(jax.random.key)(seeds)).T)


def _member_terms(terms: dict[str, jax.Array], count: int, vmapped: bool) -> list[dict]:
  """Each run's loss terms as floats."""
  if not vmapped:
    return [{k: float(v) for k, v in terms.items()}]
  arrays = {k: np.asarray(v) for k, v in terms.items()}
  return [{k: float(v[m]) for k, v in arrays.items()} for m in range(count)]


def train(
  task: Task,
  runs: Sequence[Run],
  *,
  max_epochs: int,
  checkpoint_every: int = 1,
  early_stopping: EarlyStopping | None = None,
  allow_config_change: bool = False,
  tensorboard: bool = False,
  ks: tuple[int, ...] = (),
) -> tuple[TrainState, list[dict[str, Any]]]:
  """Runs (or resumes) the task's runs until each stops early or reaches `max_epochs`.

  Args:
    task: the stage.
    runs: one run, or the task's `members` runs.
    max_epochs: the epochs a run trains at most.
    checkpoint_every: save every this many epochs (and at the last one, and on stopping).
    early_stopping: the stopping rule (needs `task.evaluate`), copied for each run; None trains
      every epoch.
    allow_config_change: resume a run whose saved identity differs in fields that change what
      is computed (they are listed in a warning); otherwise that stops with WorkdirError.
    tensorboard: also write every number of each epoch's record to WORKDIR/tensorboard.
    ks: the cutoffs of the final table.

  Returns:
    (the last state, each run's summary, as written to its summary.json).
  """
  vmapped = task.members > 0
  if len(runs) != max(task.members, 1):
    raise ValueError(f"{len(runs)} runs for a task of {task.members} members")
  if (early_stopping is None) != (task.evaluate is None):
    raise ValueError("early stopping needs an evaluation, and an evaluation early stopping")
  init_key, root_key = _keys(runs, vmapped)
  # Only process 0 of a multi-host job writes records; every process takes part in
  # checkpoints. Entered in order: the locks before orbax's manager, which tidies its folder.
  primary = is_primary()
  with contextlib.ExitStack() as stack:
    for run in runs:
      if primary:
        stack.enter_context(files.WorkdirLock(run.workdir))
    stop = stack.enter_context(StopRequests(task.name))
    checkpointer = best_keeper = None
    if not vmapped:
      checkpointer = stack.enter_context(Checkpointer(os.path.join(runs[0].workdir, "checkpoints")))
      if early_stopping is not None:
        best_keeper = stack.enter_context(
          Checkpointer(os.path.join(runs[0].workdir, BEST_DIR), keep=1)
        )
    trackers = [
      _Tracker(
        run,
        None if early_stopping is None else dataclasses.replace(early_stopping),
        f"{task.name} run {m} ({run.workdir})" if vmapped else task.name,
      )
      for m, run in enumerate(runs)
    ]
    state = task.init_state(init_key)
    start_epoch, stopped = 0, False
    if checkpointer is not None:
      state, start_epoch, stopped, saved_stopping = _restore_or_start(
        task, runs[0], checkpointer, state, allow=allow_config_change
      )
      if saved_stopping is not None and early_stopping is not None:
        trackers[0].stopping = EarlyStopping.from_json(saved_stopping)
      if best_keeper is not None:
        best_keeper.delete_after(start_epoch - 1)  # saved in epochs this run redoes
    last_epoch = start_epoch if stopped else max_epochs
    for t in trackers:
      t.epochs_run = start_epoch
      if primary:
        if start_epoch < last_epoch:
          record.remove_summary(t.run.workdir)  # no longer a finished run
        path = os.path.join(t.run.workdir, reporting.METRICS_FILE)
        t.log = reporting.MetricsLog(path, resume_from_epoch=start_epoch)
        if tensorboard:
          t.board = stack.enter_context(reporting.TensorBoard(t.run.workdir))
    for epoch in range(start_epoch, last_epoch):
      if checkpointer is not None:
        # The epoch donates the state's buffers: the previous checkpoint must be fully
        # written (saves are synchronous, so this is a guard should they become asynchronous).
        checkpointer.wait()
      if task.progress is not None:
        task.progress.start(epoch)
      tick = time.perf_counter()
      if vmapped:
        active = jnp.asarray([t.active for t in trackers])
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(root_key, epoch)
        state, raw_terms = task.train_epoch(state, task.data, keys, active)
      else:
        state, raw_terms = task.train_epoch(state, task.data, jax.random.fold_in(root_key, epoch))
      values = _member_terms(raw_terms, len(runs), vmapped)
      train_seconds = time.perf_counter() - tick
      for m, t in enumerate(trackers):
        if not t.active:
          continue
        if not _finite_terms(values[m]):
          if not vmapped:
            raise _diverged(task.name, epoch, values[m], checkpointer)
          reporting.warn(
            f"{t.label}: non-finite loss in epoch {epoch}; it stops with its best epoch so far"
          )
          t.active, t.diverged_at = False, epoch
          continue
        t.terms = values[m]
        _warn_on_growth(t, epoch, t.terms.get("loss"))
      evaluated = [t for t in trackers if t.active]
      results, eval_seconds = None, 0.0
      if task.evaluate is not None and evaluated:
        tick = time.perf_counter()
        results = task.evaluate(state.params, lambda m, r: trackers[m].stopping.improves(r))
        eval_seconds = time.perf_counter() - tick
      for t in evaluated:
        m = trackers.index(t)
        line: dict[str, Any] = {"epoch": epoch, **t.terms}
        if results is not None:
          stopped = t.stopping.update(epoch, results[m])
          line.update(_flat(results[m]))
          if t.stopping.improved and best_keeper is not None:
            meta = {"epoch": epoch, "identity": t.run.identity, "config": t.run.config}
            best_keeper.save(epoch, {"params": state.params}, meta)
          if stopped:
            t.active = False
        line["train_seconds"] = train_seconds
        if results is not None:
          line["eval_seconds"] = eval_seconds
        # The line first: a kill between the two leaves a line past the last checkpoint, which
        # the resumed run drops and writes again, rather than a checkpoint without its line.
        if t.log is not None:
          t.log.write(line)
        if t.board is not None:
          t.board.write(line)
        t.epochs_run = epoch + 1
      stopped = not any(t.active for t in trackers)
      if checkpointer is not None:
        due = (epoch + 1) % checkpoint_every == 0 or epoch + 1 == max_epochs
        if stopped or due or stop.requested:
          meta = {
            "epoch": epoch,
            "stopped": stopped,
            "identity": runs[0].identity,
            "config": runs[0].config,
          }
          if trackers[0].stopping is not None:
            meta["early_stopping"] = trackers[0].stopping.to_json()
          checkpointer.save(epoch, state, meta)
      _report_epoch(task, epoch, trackers, results, train_seconds, eval_seconds, vmapped)
      if stopped:
        break
      if stop.requested and epoch + 1 < last_epoch:
        kept = (
          "no checkpoint is kept for a vmapped ensemble: run the same command again to start "
          "it over"
          if vmapped
          else f"its checkpoint is saved in {runs[0].workdir}: run the same command again to resume"
        )
        raise Interrupted(f"{task.name} stopped by {stop.requested} after epoch {epoch}; {kept}")

    summaries = [_summary(task, t, state, vmapped, ks) for t in trackers]
    for t, summary in zip(trackers, summaries, strict=True):
      evaluated_once = t.stopping is not None and t.stopping.best_metrics
      if primary and (t.diverged_at is None or evaluated_once):
        # (a run that diverged before its first evaluation has nothing to report)
        record.write_summary(t.run.workdir, summary)
        reporting.plot_curves(t.run.workdir)
  return state, summaries


def _report_epoch(task, epoch, trackers, results, train_seconds, eval_seconds, vmapped) -> None:
  """The console line(s) of an epoch."""
  if not vmapped:
    t = trackers[0]
    reporting.log(
      reporting.epoch_line(
        task.name,
        epoch,
        t.terms,
        train_seconds=train_seconds,
        examples=task.examples_per_epoch,
        results=None if results is None else results[0],
        metric=getattr(t.stopping, "metric", ""),
        eval_seconds=eval_seconds,
        improved=t.stopping is not None and t.stopping.improved,
      )
    )
    return
  active = sum(t.active for t in trackers)
  best = ""
  if results is not None:
    metric = trackers[0].stopping.metric
    best = f"; best valid {metric} " + " ".join(f"{t.stopping.best_score:.4f}" for t in trackers)
  reporting.log(
    f"{task.name} epoch {epoch:4d}: {active} of {len(trackers)} vmapped runs still training"
    f"{best}; train {train_seconds:.2f} s, evaluation {eval_seconds:.2f} s"
  )


def _summary(task: Task, t: _Tracker, state: TrainState, vmapped: bool, ks) -> dict[str, Any]:
  """A run's summary (see `record`), logging its best epoch's metrics."""
  summary: dict[str, Any] = {
    "format": record.FORMAT_VERSION,
    "stage": task.name,
    "identity": t.run.identity,
    "config": t.run.config,
    "epochs_run": t.epochs_run,
    "vmapped": vmapped,
  }
  if t.stopping is None:
    summary["final_terms"] = t.terms
  else:
    best = t.stopping.best_metrics
    summary.update(best_epoch=t.stopping.best_epoch, **best)
    kept = os.path.join(t.run.workdir, BEST_DIR, str(t.stopping.best_epoch))
    summary["best_checkpoint"] = kept if os.path.isdir(kept) else None
    if best:
      reporting.log(
        f"{t.label}: best validation {t.stopping.metric} at epoch {t.stopping.best_epoch} "
        f"({t.epochs_run} epochs run)"
        + ("" if vmapped else "; metrics of that epoch:\n" + reporting.summary_table(best, ks=ks))
      )
  if t.diverged_at is not None:
    summary["diverged_at"] = t.diverged_at
  if task.finish is not None and not vmapped:
    summary.update(task.finish(state))
  return summary
