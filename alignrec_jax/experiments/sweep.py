"""A grid of stage-2 runs (feature inputs x hyper-parameters x seeds), selected on validation.

The protocol of the paper's comparisons: for each feature input and seed, the hyper-parameter
setting with the best validation metric is chosen, and its test metrics count; the table gives
their mean and standard deviation over seeds. The runs are `runs.train_runs`' (each in a worker
process and a folder of its own, RUNS/input/setting/seed_N), so a sweep can run several at
once, be killed and restarted (finished runs are read back, unfinished ones resume), and be
extended; or, with `vmap`, each input's runs train together in one compiled program.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from alignrec_jax import files
from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments.runs import Run, read_back, train_runs
from alignrec_jax.training import ensemble, reporting, stage2


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
    inputs: input name -> its feature files (`inputs.feature_inputs`).
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
  (`training.ensemble`); each run writes its records to its folder as a run of its own would,
  so it is read back later like any other. The runs may differ in seed and optim.lr.
  """
  for run in runs_list:
    if any(field != "optim.lr" for field, _ in run.overrides):
      raise ConfigError(
        f"--vmap trains runs that differ in seed and optim.lr only; {run.setting!r} sets "
        "other fields: drop --vmap for this grid"
      )
    run.config(base)  # a bad value fails here, before anything is trained
  summaries = read_back(runs_list, base, root)
  groups: dict[str, list[Run]] = {}
  for run in runs_list:
    if run not in summaries:
      groups.setdefault(run.input_name, []).append(run)
  for name, members in groups.items():
    reporting.log(f"sweep: {name}: {len(members)} runs at once (vmapped)")
    results = ensemble.train_members(
      [run.config(base) for run in members], [run.workdir(root) for run in members]
    )
    for run, summary in zip(members, results, strict=True):
      if "valid" not in summary:  # diverged before its first evaluation
        reporting.log(
          f"sweep: {run.input_name} {run.setting} seed {run.seed} failed: non-finite loss in "
          f"epoch {summary.get('diverged_at')} (vmapped)"
        )
        continue
      summaries[run] = summary
      reporting.log(
        f"sweep: finished {run.input_name} {run.setting} seed {run.seed}: valid "
        f"recall@20 {summary['valid']['recall@20']:.4f} (vmapped)"
      )
  return summaries
