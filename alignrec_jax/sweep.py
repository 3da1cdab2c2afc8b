"""A grid of stage-2 runs (feature inputs x hyper-parameters x seeds), selected on validation.

The protocol of the paper's comparisons: for each feature input and seed, the hyper-parameter
setting with the best validation metric is chosen, and its test metrics count; the table gives
their mean and standard deviation over seeds. Runs are independent `launch.train` processes,
each in its own folder (RUNS/input/setting/seed_N), so a sweep can run several at once, be
killed and restarted (finished runs are read back, unfinished ones resume), and be extended.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Run:
  """One stage-2 run of the grid."""

  input_name: str  # the feature input, e.g. "text", "raw", "stage1"
  features: tuple[str, ...]  # its feature files
  overrides: tuple[tuple[str, str], ...]  # (config field, value), e.g. ("optim.lr", "0.001")
  seed: int

  @property
  def setting(self) -> str:
    """The hyper-parameter setting as a folder name, e.g. "optim.lr=0.001,loss.cl_weight=0.1"."""
    return ",".join(f"{k}={v}" for k, v in self.overrides) or "default"

  def workdir(self, root: str) -> str:
    return os.path.join(root, self.input_name, self.setting, f"seed_{self.seed}")

  def flags(self, root: str) -> list[str]:
    """`launch.train` flags of this run (besides --config)."""
    features = "(" + "".join(f"{f!r}," for f in self.features) + ")"
    return ([f"--workdir={self.workdir(root)}", f"--config.seed={self.seed}",
             f"--config.data.features={features}"]
            + [f"--config.{k}={v}" for k, v in self.overrides])


def parse_grid(entries: Sequence[str]) -> list[tuple[tuple[str, str], ...]]:
  """"field=v1,v2" entries -> every combination of (field, value) pairs, in the given order."""
  axes = []
  for entry in entries:
    field, sep, values = entry.partition("=")
    if not sep or not field or not values:
      raise ValueError(f"grid entry {entry!r}: expected FIELD=V1,V2,... (e.g. optim.lr=1e-3,5e-4)")
    axes.append([(field, v) for v in values.split(",")])
  return list(itertools.product(*axes))


def make_runs(inputs: Mapping[str, Sequence[str]], grid: Sequence[tuple[tuple[str, str], ...]],
              seeds: Sequence[int]) -> list[Run]:
  """Every (input, setting, seed), inputs in the given order (so an input's runs go together)."""
  return [Run(name, tuple(files), setting, seed)
          for name, files in inputs.items() for setting in grid for seed in seeds]


def read_summary(run: Run, root: str) -> dict[str, Any] | None:
  """The finished run's summary.json, or None."""
  path = os.path.join(run.workdir(root), "summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def select(runs: Sequence[Run], summaries: Mapping[Run, Mapping[str, Any]], *,
           metric: str = "recall@20") -> dict[str, dict[int, Run]]:
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


def table(chosen: Mapping[str, Mapping[int, Run]], summaries: Mapping[Run, Mapping[str, Any]],
          *, metrics: Sequence[str] = ("recall@20", "ndcg@20")) -> dict[str, dict[str, Any]]:
  """input -> {"test/<metric>": (mean, std), "seeds": [...], "settings": [...]} over seeds.

  The standard deviation is the population one (numpy's default), as in `launch.seeds`.
  """
  out = {}
  for name, by_seed in chosen.items():
    seeds = sorted(by_seed)
    row: dict[str, Any] = {"seeds": seeds,
                           "settings": [by_seed[s].setting for s in seeds]}
    for split in ("valid", "test"):
      for metric in metrics:
        values = [summaries[by_seed[s]][split][metric] for s in seeds]
        row[f"{split}/{metric}"] = (float(np.mean(values)), float(np.std(values)))
    out[name] = row
  return out


def format_table(rows: Mapping[str, Mapping[str, Any]], *,
                 metrics: Sequence[str] = ("recall@20", "ndcg@20")) -> str:
  header = f"{'input':<12}" + "".join(f"{'test ' + m:>20}" for m in metrics) + \
      f"{'valid ' + metrics[0]:>22}  seeds / selected settings"
  lines = [header, "-" * len(header)]
  for name, row in rows.items():
    cells = "".join(f"{row[f'test/{m}'][0]:>12.4f}±{row[f'test/{m}'][1]:.4f}" for m in metrics)
    valid = row[f"valid/{metrics[0]}"]
    lines.append(f"{name:<12}{cells}{valid[0]:>14.4f}±{valid[1]:.4f}  "
                 f"{len(row['seeds'])}: {'; '.join(row['settings'])}")
  return "\n".join(lines)


# The per-run fields kept in benchmarks/results/sweep_runs_*.jsonl: one JSON line per run.
RECORD_SPLITS = ("valid", "test", "valid_short", "test_short")
RECORD_METRICS = ("recall@20", "ndcg@20")


def run_records(root: str, dataset: str) -> list[dict[str, Any]]:
  """One flat record per finished run under `root` (RUNS/input/setting/seed_N/summary.json).

  Sorted by (input, setting, seed); a split missing from a summary (e.g. the short-history
  metrics switched off) is left out of its record rather than filled in.
  """
  records = []
  for path in glob.glob(os.path.join(root, "*", "*", "seed_*", "summary.json")):
    seed_dir = os.path.dirname(path)
    setting_dir = os.path.dirname(seed_dir)
    input_dir = os.path.dirname(setting_dir)
    with open(path) as f:
      summary = json.load(f)
    record = {"dataset": dataset, "input": os.path.basename(input_dir),
              "setting": os.path.basename(setting_dir),
              "seed": int(os.path.basename(seed_dir).removeprefix("seed_")),
              "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"]}
    for split in RECORD_SPLITS:
      for metric in RECORD_METRICS:
        if split in summary:
          record[f"{split}/{metric}"] = summary[split][metric]
    records.append(record)
  return sorted(records, key=lambda r: (r["input"], r["setting"], r["seed"]))
