"""Stage-2 runs: one run or its result read back, and many runs in worker processes.

A run lives in its own workdir. The training loop writes WORKDIR/summary.json when, and only
when, the run has finished, with the run's identity (`training.record`). `stage2` reads that
summary back when it is there for the same identity, and otherwise trains (resuming from the
run's checkpoints), so an experiment can be stopped and started again and finished runs are
never redone. `train_runs` trains many `Run`s (a config's variations: feature input, settings,
seed), several at once, each in a fresh worker process whose output goes to WORKDIR/log.txt;
every experiment of many runs (sweeps, comparisons, ablations, searches) trains through it.
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import ml_collections

from alignrec_jax.errors import ConfigError
from alignrec_jax.training import record, reporting
from alignrec_jax.training import stage2 as stage2_lib


def finished(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """The summary of the stage-2 run in `workdir` if it finished with this config's identity."""
  if record.read_summary(workdir) is None:  # (the identity reads files: only when needed)
    return None
  return record.finished(workdir, stage2_lib.run_identity(config, workdir))


def stage2(
  config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict[str, Any]:
  """The summary of stage 2 with `config` in `workdir`: read back if finished, else trained
  (`allow_config_change`: see `loop.train`)."""
  summary = finished(config, workdir)
  if summary is not None:
    splits = {
      k: v for k, v in summary.items() if k in ("valid", "test", "valid_short", "test_short")
    }
    reporting.log(
      f"stage 2 in {workdir} has finished already ({summary['epochs_run']} epochs); "
      f"metrics of its best epoch, {summary['best_epoch']}:\n"
      + reporting.summary_table(splits, ks=tuple(config.eval.ks))
    )
    return summary
  return stage2_lib.train_and_evaluate(config, workdir, allow_config_change=allow_config_change)


def stage2_in_subprocess(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`stage2` for a worker process (see `train_runs`): its output goes to WORKDIR/log.txt.

  The worker's stdout and stderr (file descriptors 1 and 2, so that what XLA and absl write
  goes there too) are appended to the log file; the summary is returned to the caller.
  """
  os.makedirs(workdir, exist_ok=True)
  log = os.open(os.path.join(workdir, "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  sys.stdout.flush()
  sys.stderr.flush()
  os.dup2(log, 1)
  os.dup2(log, 2)
  os.close(log)
  reporting.show_progress()
  return stage2(config, workdir)


@dataclasses.dataclass(frozen=True)
class Run:
  """One stage-2 run of an experiment: the base config on a feature input, with a setting
  (field overrides) and a seed; it trains in ROOT/input/setting/seed_N."""

  input_name: str  # the feature input, e.g. "text", "raw", "stage1"
  features: tuple[str, ...]  # its feature files
  overrides: tuple[tuple[str, str], ...]  # (config field, value), e.g. ("optim.lr", "0.001")
  seed: int

  @property
  def setting(self) -> str:
    """The hyper-parameter setting as a folder name, e.g. "optim.lr=0.001,train.batch_size=512"."""
    return ",".join(f"{k}={v}" for k, v in self.overrides) or "default"

  def workdir(self, root: str) -> str:
    return os.path.join(root, self.input_name, self.setting, f"seed_{self.seed}")

  def config(self, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`base` with this run's seed, feature files and overrides."""
    config = base.copy_and_resolve_references()
    config.seed = self.seed
    config.data.features = tuple(self.features)
    for field, text in self.overrides:
      override(config, field, text)
    return config


def override(config: ml_collections.ConfigDict, field: str, text: str) -> None:
  """Sets the config field `field` ("optim.lr") from `text`, parsed as the field's type.

  Raises:
    ConfigError: no such field, or a value that is not of its type.
  """
  *path, name = field.split(".")
  group = config
  try:
    for part in path:
      group = group[part]
    old = group[name]
  except (KeyError, AttributeError, TypeError):
    raise ConfigError(f"grid field {field!r}: no such config field") from None
  try:
    if isinstance(old, bool):
      if text.lower() not in ("true", "false"):
        raise ValueError(text)
      value = text.lower() == "true"
    elif isinstance(old, (int, float)):
      value = type(old)(text) if isinstance(old, float) else int(text)
    elif isinstance(old, str):
      value = text
    else:
      value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ConfigError(f"grid field {field!r}: {text!r} is not a {type(old).__name__}") from None
  group[name] = value


def read_back(
  runs_list: Sequence[Run], base: ml_collections.ConfigDict, root: str
) -> dict[Run, dict[str, Any]]:
  """The summaries of the runs that have finished with their configs' identities."""
  return {
    run: summary
    for run in runs_list
    if (summary := finished(run.config(base), run.workdir(root))) is not None
  }


def train_runs(
  runs_list: Sequence[Run],
  base: ml_collections.ConfigDict,
  root: str,
  *,
  parallel: int = 1,
  time_budget: float = 0.0,
  max_new_runs: int = -1,
  worker: Callable[[ml_collections.ConfigDict, str], dict[str, Any]] = stage2_in_subprocess,
) -> dict[Run, dict[str, Any]]:
  """Trains the runs not finished yet, `parallel` at once; returns every finished run's summary.

  Each run trains in ROOT/input/setting/seed_N in a worker process of its own (`worker(config,
  workdir)`, a module-level function); a run that fails is reported and left out, and a worker
  that dies outright (killed, out of memory) fails its own run only.

  Args:
    runs_list: the runs.
    base: the config the runs vary.
    root: their folders' root.
    parallel: runs at once.
    time_budget: seconds after which no new run starts (0: no limit).
    max_new_runs: start at most this many runs (-1: all; 0: only read back finished ones).
    worker: trains one run.
  """
  os.makedirs(root, exist_ok=True)
  for run in runs_list:
    run.config(base)  # a bad field fails here, before anything is trained
  summaries = read_back(runs_list, base, root)
  todo = [r for r in runs_list if r not in summaries]
  if max_new_runs >= 0:
    todo = todo[:max_new_runs]
  reporting.log(
    f"sweep: {len(runs_list)} runs, {len(summaries)} finished already, "
    f"{len(todo)} to go, {parallel} at once"
  )
  start = time.monotonic()
  deadline = start + time_budget if time_budget else None
  while todo:
    suspects, todo = _train_in_pool(todo, base, root, worker, parallel, deadline, summaries)
    # A worker that dies (killed, out of memory) takes the pool down with every run in it; so
    # each run that was in a broken pool with others runs again alone (resuming from its last
    # checkpoint), where a death names its run. One that dies alone has failed.
    for run, error in suspects:
      if parallel == 1:
        _report_failure(run, error, root)
        continue
      reporting.log(
        f"sweep: {run.input_name} {run.setting} seed {run.seed}: a worker process died and "
        "took the pool down; running it again on its own"
      )
      for culprit, alone_error in _train_in_pool([run], base, root, worker, 1, None, summaries)[0]:
        _report_failure(culprit, alone_error, root)
  return summaries


def _train_in_pool(
  todo, base, root, worker, parallel, deadline, summaries
) -> tuple[list[tuple[Run, Exception]], list[Run]]:
  """Trains `todo` in one process pool, filling `summaries`. Returns the runs (and errors) a
  broken pool took down and the runs not started because it broke."""
  crashed: list[tuple[Run, Exception]] = []
  # A fresh process per run ("spawn", one task each): no JAX state or memory carries over, and
  # a run that raises takes only itself down.
  with concurrent.futures.ProcessPoolExecutor(
    parallel, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
  ) as pool:
    pending: dict[concurrent.futures.Future, Run] = {}
    for index, run in enumerate(todo):
      if len(pending) >= parallel:  # wait for a free slot
        done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
        crashed += _collect(done, pending, summaries, root)
      if deadline is not None and time.monotonic() > deadline:
        reporting.log(f"sweep: time budget spent; {len(todo) - index} runs not started")
        break
      if crashed:  # the pool is broken: the rest starts in the next one
        crashed += _collect(concurrent.futures.wait(pending).done, pending, summaries, root)
        return crashed, list(todo[index:])
      pending[pool.submit(worker, run.config(base), run.workdir(root))] = run
    crashed += _collect(concurrent.futures.wait(pending).done, pending, summaries, root)
  return crashed, []


def _collect(done, pending: dict, summaries: dict, root: str) -> list[tuple[Run, Exception]]:
  """Files the finished futures' summaries and reports failures; returns the runs (and
  errors) that a broken pool took down, for the caller to start again or report."""
  crashed = []
  for future in done:
    run = pending.pop(future)
    try:
      summaries[run] = future.result()
    except BrokenProcessPool as e:
      crashed.append((run, e))
      continue
    except Exception as e:  # a failed run is reported, and the sweep goes on
      _report_failure(run, e, root)
      continue
    reporting.log(
      f"sweep: finished {run.input_name} {run.setting} seed {run.seed}: valid "
      f"recall@20 {summaries[run]['valid']['recall@20']:.4f}"
    )
  return crashed


def _report_failure(run: Run, error: BaseException, root: str) -> None:
  where = os.path.join(run.workdir(root), "log.txt")
  reporting.log(
    f"sweep: {run.input_name} {run.setting} seed {run.seed} failed "
    f"({type(error).__name__}: {error}); see {where}\n"
    + "".join(traceback.format_exception_only(error)).strip()
  )
