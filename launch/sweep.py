r"""Stage 2 over a grid of feature inputs x hyper-parameters x seeds, selected on validation.

  python -m launch.sweep --config=configs/lfm2k.py --workdir=runs/lfm2k_sweep \
      --inputs=text,audio,raw,stage1 --grid=optim.lr=1e-3,5e-4 --grid=loss.cl_weight=0.01,0.1 \
      --seeds=999,1000,1001 --parallel=2

Inputs: a stage-1 modality name (its paired raw feature file alone: `config.data.features` and
`config.stage1.modalities` pair by position), "raw" (all raw feature files, combined as the
config says), "stage1" (the stage-1 features: WORKDIR/stage1, trained first if needed, or
--stage1_features=FILE). Every run is a `launch.train` process in
WORKDIR/runs/INPUT/SETTING/seed_N (its log in log.txt there); `--config.*` flags given here
are passed on to each. Finished runs are read back, so the command can be stopped and run
again. Prints, per input, the mean ± std over seeds of the test metrics of the setting with the
best validation Recall@20, and writes WORKDIR/sweep.json.
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from alignrec_jax import experiment, feature_comparison, pretraining, reporting, sweep
from alignrec_jax.data import load_mmrec

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's folder.", required=True)
_INPUTS = flags.DEFINE_list("inputs", ["raw", "stage1"], "Feature inputs (see above).")
_GRID = flags.DEFINE_multi_string("grid", ["optim.lr=1e-3,5e-4", "loss.cl_weight=0.01,0.1"],
                                  "FIELD=V1,V2,...: one axis of the hyper-parameter grid.")
_SEEDS = flags.DEFINE_list("seeds", ["999", "1000", "1001"], "Seeds.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once.")
_TIME_BUDGET = flags.DEFINE_float("time_budget", 0.0,
                                  "Seconds after which no new run starts (0: no limit).")
_MAX_NEW_RUNS = flags.DEFINE_integer("max_new_runs", -1,
                                     "Start at most this many runs (-1: all; 0: only collect "
                                     "the finished ones into the table).")
_STAGE1_FEATURES = flags.DEFINE_string("stage1_features", None,
                                       "The stage-1 feature file to use for input 'stage1' "
                                       "instead of training stage 1 in WORKDIR.")


def _inputs(config, workdir: str) -> dict[str, list[str]]:
  folder = experiment.dataset_folder(config.data, workdir)
  raw = [os.path.abspath(os.path.join(folder, f)) for f in config.data.features]
  by_modality = {name: [os.path.abspath(os.path.join(folder, file))]
                 for file, name in feature_comparison.paired_modalities(config)}
  out = {}
  for name in _INPUTS.value:
    if name == "raw":
      out[name] = raw
    elif name == "stage1":
      path = _STAGE1_FEATURES.value or pretraining.run_pretraining(
          config.stage1, folder, workdir, num_items=load_mmrec(folder).num_items,
          seed=config.seed)
      out[name] = [os.path.abspath(path)]
    elif name in by_modality:
      out[name] = by_modality[name]
    else:
      raise app.UsageError(f"unknown input {name!r}: use raw, stage1 or one of "
                           f"{list(by_modality)}")
  return out


def _passed_on_flags() -> list[str]:
  """This command's --config and --config.* flags, for the launch.train processes."""
  passed = [a for a in sys.argv[1:] if a.startswith("--config")]
  if any("=" not in a for a in passed):
    raise app.UsageError("write --config flags as --config=FILE and --config.FIELD=VALUE (with "
                         "'='): they are passed on to each run")
  return passed


def _run(run: sweep.Run, root: str) -> sweep.Run:
  os.makedirs(run.workdir(root), exist_ok=True)
  with open(os.path.join(run.workdir(root), "log.txt"), "a") as log:
    subprocess.run([sys.executable, "-m", "launch.train", *_passed_on_flags(), *run.flags(root)],
                   stdout=log, stderr=subprocess.STDOUT, check=True)
  return run


def main(argv):
  del argv
  reporting.show_progress()
  config, workdir = _CONFIG.value, _WORKDIR.value
  root = os.path.join(workdir, "runs")
  os.makedirs(root, exist_ok=True)
  inputs = _inputs(config, workdir)
  runs = sweep.make_runs(inputs, sweep.parse_grid(_GRID.value), [int(s) for s in _SEEDS.value])
  summaries = {r: s for r in runs if (s := sweep.read_summary(r, root)) is not None}
  todo = [r for r in runs if r not in summaries]
  if _MAX_NEW_RUNS.value >= 0:
    todo = todo[:_MAX_NEW_RUNS.value]
  reporting.log(f"sweep: {len(runs)} runs, {len(summaries)} finished already, {len(todo)} to "
                f"go, {_PARALLEL.value} at once")
  start = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(_PARALLEL.value) as pool:
    pending = set()
    for index, run in enumerate(todo):
      if len(pending) >= _PARALLEL.value:  # wait for a free slot
        done, pending = concurrent.futures.wait(pending,
                                                return_when=concurrent.futures.FIRST_COMPLETED)
        _collect(done, summaries, root)
      if _TIME_BUDGET.value and time.monotonic() - start > _TIME_BUDGET.value:
        reporting.log(f"sweep: time budget spent; {len(todo) - index} runs not started")
        break
      pending.add(pool.submit(_run, run, root))
    _collect(concurrent.futures.wait(pending).done, summaries, root)

  chosen = sweep.select(runs, summaries)
  rows = sweep.table(chosen, summaries)
  with open(os.path.join(workdir, "sweep.json"), "w") as f:
    json.dump({"inputs": inputs, "grid": _GRID.value, "seeds": _SEEDS.value,
               "minutes": (time.monotonic() - start) / 60, "table": rows}, f, indent=1)
  print(sweep.format_table(rows))


def _collect(done, summaries, root: str) -> None:
  for future in done:
    try:
      run = future.result()
    except subprocess.CalledProcessError as e:
      logging.error("sweep: a run failed (%s); see its log.txt", e)
      continue
    summaries[run] = sweep.read_summary(run, root)
    reporting.log(f"sweep: finished {run.input_name} {run.setting} seed {run.seed}: valid "
                  f"recall@20 {summaries[run]['valid']['recall@20']:.4f}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
