"""A grid of stage-2 runs (feature inputs x hyper-parameters x seeds), selected on validation.

The protocol of the paper's comparisons: for each feature input and seed, the hyper-parameter
setting with the best validation metric is chosen, and its test metrics count; the table gives
their mean and standard deviation over seeds. Every run is `runs.stage2` in a worker process of
its own (its output in its folder's log.txt), each in its own folder (RUNS/input/setting/
seed_N), so a sweep can run several at once, be killed and restarted (finished runs are read
back, unfinished ones resume), and be extended.
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import itertools
import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import ml_collections
import numpy as np

from alignrec_jax import files
from alignrec_jax.data import load_mmrec
from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import feature_comparison, runs
from alignrec_jax.training import ensemble, loop, reporting, stage1, stage2


@dataclasses.dataclass(frozen=True)
class Run:
  """One stage-2 run of the grid."""

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


def parse_grid(entries: Sequence[str]) -> list[tuple[tuple[str, str], ...]]:
  """ "field=v1,v2" entries -> every combination of (field, value) pairs, in the given order."""
  axes = []
  for entry in entries:
    field, sep, values = entry.partition("=")
    if not sep or not field or not values:
      raise ValueError(f"grid entry {entry!r}: expected FIELD=V1,V2,... (e.g. optim.lr=1e-3,5e-4)")
    axes.append([(field, v) for v in values.split(",")])
  return list(itertools.product(*axes))


def make_runs(
  inputs: Mapping[str, Sequence[str]],
  grid: Sequence[tuple[tuple[str, str], ...]],
  seeds: Sequence[int],
) -> list[Run]:
  """Every (input, setting, seed), inputs in the given order (so an input's runs go together)."""
  return [
    Run(name, tuple(files), setting, seed)
    for name, files in inputs.items()
    for setting in grid
    for seed in seeds
  ]


def select(
  runs: Sequence[Run], summaries: Mapping[Run, Mapping[str, Any]], *, metric: str = "recall@20"
) -> dict[str, dict[int, Run]]:
  """input -> seed -> the run whose validation `metric` is best (ties: first in grid order).

  Only (input, seed) pairs whose every setting has finished are selected.
  """
  chosen: dict[str, dict[int, Run]] = {}
  groups: dict[tuple[str, int], list[Run]] = {}
  for run in runs:
    groups.setdefault((run.input_name, run.seed), []).append(run)
  for (name, seed), group in groups.items():
    if all(run in summaries for run in group):
      best = max(group, key=lambda r: (summaries[r]["valid"][metric], -group.index(r)))
      chosen.setdefault(name, {})[seed] = best
  return chosen


def table(
  chosen: Mapping[str, Mapping[int, Run]],
  summaries: Mapping[Run, Mapping[str, Any]],
  *,
  metrics: Sequence[str] = ("recall@20", "ndcg@20"),
) -> dict[str, dict[str, Any]]:
  """input -> {"test/<metric>": (mean, std), "seeds": [...], "settings": [...]} over seeds.

  The standard deviation is the population one (numpy's default), as in `launch.seeds`.
  """
  out = {}
  for name, by_seed in chosen.items():
    seeds = sorted(by_seed)
    row: dict[str, Any] = {"seeds": seeds, "settings": [by_seed[s].setting for s in seeds]}
    for split in ("valid", "test"):
      for metric in metrics:
        values = [summaries[by_seed[s]][split][metric] for s in seeds]
        row[f"{split}/{metric}"] = (float(np.mean(values)), float(np.std(values)))
    out[name] = row
  return out


def format_table(
  rows: Mapping[str, Mapping[str, Any]], *, metrics: Sequence[str] = ("recall@20", "ndcg@20")
) -> str:
  header = (
    f"{'input':<12}"
    + "".join(f"{'test ' + m:>20}" for m in metrics)
    + f"{'valid ' + metrics[0]:>22}  seeds / selected settings"
  )
  lines = [header, "-" * len(header)]
  for name, row in rows.items():
    cells = "".join(f"{row[f'test/{m}'][0]:>12.4f}±{row[f'test/{m}'][1]:.4f}" for m in metrics)
    valid = row[f"valid/{metrics[0]}"]
    lines.append(
      f"{name:<12}{cells}{valid[0]:>14.4f}±{valid[1]:.4f}  "
      f"{len(row['seeds'])}: {'; '.join(row['settings'])}"
    )
  return "\n".join(lines)


def check_input_names(
  config: ml_collections.ConfigDict, names: Sequence[str], *, field: str
) -> None:
  """Raises ConfigError unless every name is an input `feature_inputs` knows (see there).

  Runs before any data is read; `field` names where the names came from, for the message.
  """
  unknown = [name for name in names if name not in ("raw", "stage1")]
  if not unknown:
    return
  try:
    modalities = [name for _, name in feature_comparison.paired_modalities(config)]
  except ConfigError as e:
    raise ConfigError(f"{field}: input {unknown[0]!r} needs paired modalities: {e}") from None
  for name in unknown:
    if name not in modalities:
      raise ConfigError(
        f"{field}: unknown input {name!r}; expected raw, stage1 or one of {modalities}"
      )


def feature_inputs(
  config: ml_collections.ConfigDict,
  workdir: str,
  names: Sequence[str],
  *,
  stage1_features: str | None = None,
) -> dict[str, list[str]]:
  """Feature files of each named input, absolute.

  Args:
    config: the experiment config.
    workdir: the sweep's folder (stage 1 trains under it for input "stage1").
    names: "raw" (every raw feature file, combined as the config says), "stage1" (the stage-1
      features) or a stage-1 modality name (its paired raw feature file alone: the config's
      `data.features` and `stage1.data.modalities` pair by position).
    stage1_features: the stage-1 feature file to use instead of training stage 1.
  """
  check_input_names(config, names, field="inputs")
  folder = stage2.dataset_folder(config.data, workdir)
  raw = [os.path.abspath(os.path.join(folder, f)) for f in config.data.features]
  out = {}
  for name in names:
    if name == "raw":
      out[name] = raw
    elif name == "stage1":
      path = stage1_features or stage1.run_stage1(
        config.stage1, folder, workdir, num_items=load_mmrec(folder).num_items, seed=config.seed
      )
      out[name] = [os.path.abspath(path)]
    else:
      paired = dict((m, f) for f, m in feature_comparison.paired_modalities(config))
      out[name] = [os.path.abspath(os.path.join(folder, paired[name]))]
  return out


def _read_back(
  runs_list: Sequence[Run], base: ml_collections.ConfigDict, root: str
) -> dict[Run, dict[str, Any]]:
  return {
    run: summary
    for run in runs_list
    if (summary := runs.finished(run.config(base), run.workdir(root))) is not None
  }


def run_sweep(
  base: ml_collections.ConfigDict,
  workdir: str,
  inputs: Mapping[str, Sequence[str]],
  grid: Sequence[str],
  seeds: Sequence[int],
  *,
  parallel: int = 1,
  time_budget: float = 0.0,
  max_new_runs: int = -1,
  vmap: bool = False,
) -> dict[str, Any]:
  """Trains every (input, setting, seed) not finished yet, then selects and tabulates.

  Args:
    base: the experiment config.
    workdir: runs go to WORKDIR/runs/INPUT/SETTING/seed_N; the result to WORKDIR/sweep.json.
    inputs: input name -> its feature files (`feature_inputs`).
    grid: "FIELD=V1,V2,..." axes of the hyper-parameter grid.
    seeds: the seeds.
    parallel: runs at once, each in a worker process of its own.
    time_budget: seconds after which no new run starts (0: no limit).
    max_new_runs: start at most this many runs (-1: all; 0: only read back finished ones).
    vmap: train each input's runs together in one compiled program (`training.ensemble`;
      the grid may sweep optim.lr only) instead of one worker process per run.

  Returns:
    What WORKDIR/sweep.json holds: the inputs, grid, seeds, minutes and the table.
  """
  stage2.check_config(base)
  with files.WorkdirLock(workdir):  # one sweep per folder; each run locks its own too
    return _run_sweep(
      base,
      workdir,
      inputs,
      grid,
      seeds,
      parallel=parallel,
      time_budget=time_budget,
      max_new_runs=max_new_runs,
      vmap=vmap,
    )


def _run_sweep(base, workdir, inputs, grid, seeds, *, parallel, time_budget, max_new_runs, vmap):
  root = os.path.join(workdir, "runs")
  grid_runs = make_runs(inputs, parse_grid(grid), seeds)
  start = time.monotonic()
  if vmap:
    summaries = train_runs_vmapped(grid_runs, base, root)
  else:
    summaries = train_runs(
      grid_runs, base, root, parallel=parallel, time_budget=time_budget, max_new_runs=max_new_runs
    )
  rows = table(select(grid_runs, summaries), summaries)
  result = {
    "inputs": dict(inputs),
    "grid": list(grid),
    "seeds": list(seeds),
    "minutes": (time.monotonic() - start) / 60,
    "table": rows,
  }
  files.atomic_write(os.path.join(workdir, "sweep.json"), json.dumps(result, indent=1))
  return result


def train_runs_vmapped(
  runs_list: Sequence[Run], base: ml_collections.ConfigDict, root: str
) -> dict[Run, dict[str, Any]]:
  """`train_runs`, but each input's unfinished runs train together in this process, vmapped
  (`training.ensemble`); each run's summary is written to its folder as a run of its own would
  write it, so it is read back later like any other. The runs may differ in seed and optim.lr.
  """
  for run in runs_list:
    if any(field != "optim.lr" for field, _ in run.overrides):
      raise ConfigError(
        f"--vmap trains runs that differ in seed and optim.lr only; {run.setting!r} sets "
        "other fields: drop --vmap for this grid"
      )
    run.config(base)  # a bad value fails here, before anything is trained
  summaries = _read_back(runs_list, base, root)
  groups: dict[str, list[Run]] = {}
  for run in runs_list:
    if run not in summaries:
      groups.setdefault(run.input_name, []).append(run)
  for name, members in groups.items():
    configs = [run.config(base) for run in members]
    reporting.log(f"sweep: {name}: {len(members)} runs at once (vmapped)")
    results = ensemble.train_members(
      configs[0],
      members[0].workdir(root),
      [c.seed for c in configs],
      [c.optim.lr for c in configs],
    )
    for run, config, result in zip(members, configs, results, strict=True):
      if "valid" not in result:  # diverged before its first evaluation
        reporting.log(
          f"sweep: {run.input_name} {run.setting} seed {run.seed} failed: non-finite loss in "
          f"epoch {result.get('diverged_at')} (vmapped)"
        )
        continue
      summary = {
        "format": loop.FORMAT_VERSION,
        "config": json.loads(config.to_json()),
        "vmapped": True,
        **result,
      }
      os.makedirs(run.workdir(root), exist_ok=True)
      files.atomic_write(
        os.path.join(run.workdir(root), loop.SUMMARY_FILE), json.dumps(summary, indent=1)
      )
      summaries[run] = summary
      reporting.log(
        f"sweep: finished {run.input_name} {run.setting} seed {run.seed}: valid "
        f"recall@20 {summary['valid']['recall@20']:.4f} (vmapped)"
      )
  return summaries


def train_runs(
  runs_list: Sequence[Run],
  base: ml_collections.ConfigDict,
  root: str,
  *,
  parallel: int = 1,
  time_budget: float = 0.0,
  max_new_runs: int = -1,
  worker: Callable[[ml_collections.ConfigDict, str], dict[str, Any]] = runs.stage2_in_subprocess,
) -> dict[Run, dict[str, Any]]:
  """Trains the runs not finished yet, `parallel` at once; returns every finished run's summary.

  Each run trains in ROOT/input/setting/seed_N in a worker process of its own (`worker(config,
  workdir)`, a module-level function); a run that fails is reported and left out, and a worker
  that dies outright (killed, out of memory) fails its own run only. The other arguments after
  `root` are `run_sweep`'s.
  """
  os.makedirs(root, exist_ok=True)
  for run in runs_list:
    run.config(base)  # a bad field fails here, before anything is trained
  summaries = _read_back(runs_list, base, root)
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
