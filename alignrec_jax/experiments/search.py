"""Hyper-parameter search on validation only: grid, random or TPE, with hopeless trials pruned.

The public AlignRec and MMRec pipelines pick the setting whose *test* metric is best; here the
test split chooses nothing. Each trial is a stage-2 run of the config with the trial's values
(`runs.Run`, WORKDIR/runs/search/SETTING/seed_N), trained in waves of `parallel` trials:

  * samplers: "grid" (every combination of the `choice` dimensions), "random" (`trials` draws,
    seeded) or "tpe" (Optuna's tree-structured Parzen estimator, told each finished wave);
  * pruning at rungs (epochs, e.g. 25 and 100): every trial of a wave trains to the first rung;
    one whose best validation Recall@20 so far is below the median of all trials' values at that
    rung stops there (once `prune_after` trials have reached it); the rest resume to the next
    rung and finally to the config's max_epochs (runs resume, so nothing is trained twice). A
    trial that early stopping ends before a rung simply has its final value;
  * the chosen setting: the best final validation Recall@20 among trials not pruned; its test
    metrics are reported beside it, never used.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from alignrec_jax import files
from alignrec_jax.errors import AssetError, ConfigError
from alignrec_jax.experiments.runs import Run, train_runs
from alignrec_jax.training import reporting, stage2

SAMPLERS = ("grid", "random", "tpe")
KINDS = ("choice", "uniform", "loguniform", "int")
RESULT_FILE = "search.json"
METRIC = "recall@20"


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One searched config field: `choice` among values, or a `uniform` / `loguniform` / `int`
  range [low, high]."""

  field: str
  kind: str
  values: tuple[str, ...]  # choices, or (low, high) as written

  def sample(self, rng: np.random.Generator) -> str:
    if self.kind == "choice":
      return self.values[int(rng.integers(len(self.values)))]
    low, high = (float(v) for v in self.values)
    if self.kind == "int":
      return str(int(rng.integers(int(low), int(high) + 1)))
    if self.kind == "loguniform":
      return f"{math.exp(rng.uniform(math.log(low), math.log(high))):.4g}"
    return f"{rng.uniform(low, high):.4g}"

  def suggest(self, trial) -> str:
    """The value an Optuna trial suggests, as text."""
    if self.kind == "choice":
      return trial.suggest_categorical(self.field, list(self.values))
    low, high = (float(v) for v in self.values)
    if self.kind == "int":
      return str(trial.suggest_int(self.field, int(low), int(high)))
    return f"{trial.suggest_float(self.field, low, high, log=self.kind == 'loguniform'):.4g}"


def parse_space(entries: Sequence[str]) -> list[Dimension]:
  """ "FIELD=KIND:SPEC" entries: choice:a,b,c | uniform:LOW:HIGH | loguniform:LOW:HIGH |
  int:LOW:HIGH (e.g. optim.lr=loguniform:1e-4:1e-2).

  Raises:
    ConfigError: an entry of another form, an unknown kind or a range that is not one.
  """
  dims = []
  for entry in entries:
    field, sep, spec = entry.partition("=")
    kind, colon, rest = spec.partition(":")
    if not sep or not field or not colon or kind not in KINDS or not rest:
      raise ConfigError(
        f"space entry {entry!r}: expected FIELD=KIND:SPEC with KIND one of {', '.join(KINDS)} "
        "(e.g. optim.lr=loguniform:1e-4:1e-2 or model.alignrec.loss.cl_weight=choice:0.01,0.1)"
      )
    if kind == "choice":
      values = tuple(rest.split(","))
    else:
      values = tuple(rest.split(":"))
      try:
        low, high = (float(v) for v in values)
      except ValueError:
        raise ConfigError(f"space entry {entry!r}: {kind} needs LOW:HIGH, two numbers") from None
      if not low < high or (kind == "loguniform" and low <= 0):
        raise ConfigError(f"space entry {entry!r}: need LOW < HIGH (and LOW > 0 for loguniform)")
    dims.append(Dimension(field, kind, values))
  if len({d.field for d in dims}) != len(dims):
    raise ConfigError("space: a field appears twice")
  return dims


class _Proposer:
  """Proposes settings ((field, text) pairs) wave by wave and learns from the finished ones."""

  def __init__(self, sampler: str, dims: Sequence[Dimension], trials: int, seed: int):
    self.dims, self.sampler = list(dims), sampler
    if sampler == "grid":
      if any(d.kind != "choice" for d in dims):
        raise ConfigError("the grid sampler takes choice dimensions only (FIELD=choice:a,b)")
      self._grid = [
        tuple(zip([d.field for d in dims], combo, strict=True))
        for combo in itertools.product(*(d.values for d in dims))
      ]
      self.total = len(self._grid)
    else:
      self.total = trials
    self._rng = np.random.default_rng(seed)
    self._asked: dict[tuple, Any] = {}
    self._values: dict[tuple, float | None] = {}  # every setting proposed -> its value
    if sampler == "tpe":
      try:
        import optuna  # an optional dependency, imported only here
      except ImportError:
        raise AssetError("the tpe sampler needs Optuna: pip install -e '.[search]'") from None
      optuna.logging.set_verbosity(optuna.logging.WARNING)
      self._optuna = optuna
      self._study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
      )
    self._made = 0

  def propose(self, n: int) -> list[tuple[tuple[str, str], ...]]:
    """Up to n settings not proposed before (fewer once a small space is used up)."""
    out = []
    for _ in range(100 * n):  # draws that repeat a setting are skipped, within reason
      if len(out) == n or self._made == self.total:
        break
      trial = None
      if self.sampler == "grid":
        setting = self._grid[self._made]
      elif self.sampler == "random":
        setting = tuple((d.field, d.sample(self._rng)) for d in self.dims)
      else:
        trial = self._study.ask()
        setting = tuple((d.field, d.suggest(trial)) for d in self.dims)
      if setting in self._values:  # tried or in training: not again
        if trial is not None:  # tell TPE what that setting gave, or that this draw failed
          known = self._values[setting]
          if known is None:
            self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
          else:
            self._study.tell(trial, known)
        continue
      self._values[setting] = None
      if trial is not None:
        self._asked[setting] = trial
      self._made += 1
      out.append(setting)
    return out

  def observe(self, setting: tuple, value: float | None, pruned_at: int | None) -> None:
    """Tells the sampler a trial's final value, or its value at the rung that pruned it."""
    self._values[setting] = value
    if self.sampler != "tpe":
      return
    trial = self._asked.pop(setting)
    state = self._optuna.trial.TrialState
    if value is None:
      self._study.tell(trial, state=state.FAIL)
    elif pruned_at is not None:
      trial.report(value, pruned_at)  # Optuna takes a pruned trial's value from its report
      self._study.tell(trial, state=state.PRUNED)
    else:
      self._study.tell(trial, value)


def run_search(
  config: ml_collections.ConfigDict,
  workdir: str,
  space: Sequence[str],
  *,
  sampler: str = "random",
  trials: int = 8,
  rungs: Sequence[int] = (),
  prune_after: int = 4,
  parallel: int = 1,
  seed: int = 0,
) -> dict[str, Any]:
  """Runs the search (see the module's docstring); returns and writes WORKDIR/search.json.

  `prune_after`: no trial is pruned at a rung before this many trials have reached it (as
  Optuna's median pruner waits for its start-up trials).
  """
  if sampler not in SAMPLERS:
    raise ConfigError(f"sampler: {sampler!r}, expected one of {', '.join(SAMPLERS)}")
  dims = parse_space(space)
  if not dims:
    raise ConfigError("space: give at least one FIELD=KIND:SPEC")
  stage2.check_config(config)
  rungs = sorted(r for r in rungs if 0 < r < config.train.max_epochs)
  proposer = _Proposer(sampler, dims, trials, seed)
  features = tuple(config.data.features)
  root = os.path.join(workdir, "runs")
  records: list[dict[str, Any]] = []
  at_rung: dict[int, list[float]] = {r: [] for r in rungs}
  with files.WorkdirLock(workdir):
    while wave := proposer.propose(parallel):
      runs = [Run("search", features, setting, config.seed) for setting in wave]
      summaries, pruned_at = _train_wave(runs, config, root, rungs, at_rung, parallel, prune_after)
      for run in runs:
        summary = summaries.get(run)
        value = None if summary is None else summary["valid"][METRIC]
        proposer.observe(run.overrides, value, pruned_at.get(run))
        records.append(_record(run, root, pruned_at.get(run), summary))
  finished = [r for r in records if r["pruned_at"] is None and r["valid"] is not None]
  best = max(finished, key=lambda r: r["valid"][METRIC], default=None)
  result = {
    "sampler": sampler,
    "space": list(space),
    "rungs": list(rungs),
    "max_epochs": config.train.max_epochs,
    "seed": config.seed,
    "trials": records,
    "best": best,
  }
  files.atomic_write(os.path.join(workdir, RESULT_FILE), json.dumps(result, indent=1))
  return result


def _train_wave(runs, config, root, rungs, at_rung, parallel, prune_after):
  """Trains a wave of trials rung by rung; returns (run -> its latest summary, run -> the rung
  where it was pruned). `at_rung` (rung -> every trial's value there) grows."""
  summaries: dict[Run, dict[str, Any]] = {}
  pruned_at: dict[Run, int] = {}
  active = list(runs)
  for budget in [*rungs, config.train.max_epochs]:
    if not active:
      break
    base = config.copy_and_resolve_references()
    base.train.max_epochs = budget
    summaries.update(train_runs(active, base, root, parallel=parallel))
    active = [r for r in active if r in summaries]  # a failed trial drops out, reported
    if budget == config.train.max_epochs:
      break
    values = {r: summaries[r]["valid"][METRIC] for r in active}
    at_rung[budget].extend(values.values())
    median = float(np.median(at_rung[budget]))
    for run, value in values.items():
      # A trial that early stopping ended before the rung has finished: it is not pruned.
      ready = len(at_rung[budget]) >= prune_after
      if ready and summaries[run]["epochs_run"] >= budget and value < median:
        pruned_at[run] = budget
        reporting.log(
          f"search: pruned {run.setting} at epoch {budget}: valid {METRIC} {value:.4f} is below "
          f"the median {median:.4f} of the {len(at_rung[budget])} trials there"
        )
    active = [r for r in active if r not in pruned_at and summaries[r]["epochs_run"] >= budget]
  return summaries, pruned_at


def _record(run, root, pruned_at, summary) -> dict[str, Any]:
  return {
    "setting": dict(run.overrides),
    "workdir": run.workdir(root),
    "pruned_at": pruned_at,
    "valid": None if summary is None else {METRIC: summary["valid"][METRIC]},
    "test": None if summary is None else {k: summary["test"][k] for k in (METRIC, "ndcg@20")},
    "epochs_run": None if summary is None else summary["epochs_run"],
  }


def format_result(result: Mapping[str, Any]) -> str:
  """The trials, best first, and the chosen setting with its test metrics."""
  lines = [
    f"search: {result['sampler']}, {len(result['trials'])} trials, rungs {result['rungs']} "
    f"(epochs), at most {result['max_epochs']} epochs, seed {result['seed']}; chosen on "
    f"validation {METRIC} only",
    f"{'valid ' + METRIC:>17}  {'test ' + METRIC:>16}  status              setting",
  ]
  order = sorted(result["trials"], key=lambda r: -(r["valid"] or {}).get(METRIC, -1.0))
  for r in order:
    valid = f"{r['valid'][METRIC]:.4f}" if r["valid"] else "-"
    test = f"{r['test'][METRIC]:.4f}" if r["test"] else "-"
    status = (
      f"pruned at epoch {r['pruned_at']}"
      if r["pruned_at"] is not None
      else ("failed" if r["valid"] is None else f"{r['epochs_run']} epochs")
    )
    setting = ", ".join(f"{k}={v}" for k, v in r["setting"].items())
    lines.append(f"{valid:>17}  {test:>16}  {status:<18}  {setting}")
  best = result["best"]
  if best is None:
    lines.append("no trial finished")
  else:
    setting = ", ".join(f"{k}={v}" for k, v in best["setting"].items())
    lines.append(
      f"chosen: {setting}: valid {METRIC} {best['valid'][METRIC]:.4f}; its test "
      f"{METRIC} {best['test'][METRIC]:.4f}, ndcg@20 {best['test']['ndcg@20']:.4f} (reported, "
      "not used to choose)"
    )
  return "\n".join(lines)
