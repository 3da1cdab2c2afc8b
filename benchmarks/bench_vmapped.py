r"""Runs per hour: K stage-2 runs trained together under jax.vmap against one at a time.

  python -m benchmarks.bench_vmapped --config=configs/ml100k.py --members=4,12 --epochs=5
  python -m benchmarks.bench_vmapped --config=configs/baby_graph.py --members=12 \
      --config.model.kernel=segment_sum --alone_runs=2 --grid_runs=175 --epochs_per_run=300  # GPU

Each of the K runs has its own seed and learning rate and trains exactly --epochs epochs (the
patience is set past them, so none stops early). "One at a time" is K `train_and_evaluate`
calls in this process, one after the other, each with its own set-up, compile and evaluation
per epoch, as separate runs are; "vmapped" is one `ensemble.train_members` call. Both times are
wall clock around the whole call, set-up and compiles included, so runs per hour = K / time x
3600 at this run length. Also printed: seconds per member-epoch (time / (K x epochs)), and, with
--grid_runs, the wall time of a grid of that many runs of --epochs_per_run epochs (the
reference's 175-run Baby grid): the ensemble is timed again for one epoch, which splits its time
into a fixed part (set-up, compiles) and a per-epoch part, and the grid is ceil(runs / K)
ensembles of --epochs_per_run epochs each. With --alone_runs=N only N of the K runs are timed one at
a time and their time is scaled to K (recorded as one_at_a_time_runs_timed). `--output` appends
the result as one JSON line.
"""

import math
import shutil
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

from alignrec_jax.training import ensemble, stage2
from benchmarks import machine

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ml100k.py", "Experiment config.")
_MEMBERS = flags.DEFINE_list("members", ["4", "12"], "K values to time.")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Epochs every run trains.")
_ALONE_RUNS = flags.DEFINE_integer(
  "alone_runs",
  0,
  "Time only this many of the K runs one at a time and scale to K (0: all K). Every run does "
  "the same work (same data, epochs and program), so this trades a longer measurement for an "
  "extrapolation, recorded in the result.",
)
_GRID_RUNS = flags.DEFINE_integer("grid_runs", 0, "Estimate the wall time of this many runs.")
_EPOCHS_PER_RUN = flags.DEFINE_integer("epochs_per_run", 300, "Their epochs each (estimate).")
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")


def _members(k: int) -> tuple[list[int], list[float]]:
  lrs = [1e-3, 5e-4, 2e-3]
  return [1000 + m for m in range(k)], [lrs[m % len(lrs)] for m in range(k)]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # the runs' own tables would bury the result
  config = _CONFIG.value
  config.train.max_epochs = _EPOCHS.value
  config.train.patience = _EPOCHS.value  # nobody stops early: equal work both ways
  config.train.checkpoint_every = _EPOCHS.value
  scratch = tempfile.mkdtemp(prefix="bench_vmapped_")
  rows = []
  try:
    for k in (int(m) for m in _MEMBERS.value):
      seeds, lrs = _members(k)
      alone_runs = min(_ALONE_RUNS.value or k, k)
      tick = time.perf_counter()
      for m, (seed, lr) in enumerate(zip(seeds[:alone_runs], lrs, strict=False)):
        single = config.copy_and_resolve_references()
        single.seed, single.optim.lr = seed, lr
        stage2.train_and_evaluate(single, f"{scratch}/k{k}_run{m}")
      alone = (time.perf_counter() - tick) * k / alone_runs
      tick = time.perf_counter()
      ensemble.train_members(
        ensemble.member_configs(config, seeds, lrs),
        [f"{scratch}/k{k}_vmapped/{m}" for m in range(k)],
      )
      together = time.perf_counter() - tick
      row = {
        "members": k,
        "epochs": _EPOCHS.value,
        "one_at_a_time_seconds": alone,
        "one_at_a_time_runs_timed": alone_runs,  # < members: scaled from these runs
        "vmapped_seconds": together,
        "runs_per_hour_one_at_a_time": k / alone * 3600,
        "runs_per_hour_vmapped": k / together * 3600,
        "speedup": alone / together,
        "seconds_per_member_epoch_vmapped": together / (k * _EPOCHS.value),
      }
      if _GRID_RUNS.value:
        # The fixed cost (set-up, compiles) apart from the per-epoch one: the same members
        # again for one epoch. A grid is ceil(runs / K) ensembles, each paying the fixed cost.
        short = config.copy_and_resolve_references()
        short.train.max_epochs = short.train.patience = 1
        tick = time.perf_counter()
        ensemble.train_members(
          ensemble.member_configs(short, seeds, lrs),
          [f"{scratch}/k{k}_one_epoch/{m}" for m in range(k)],
        )
        one_epoch = time.perf_counter() - tick
        per_epoch = (together - one_epoch) / (_EPOCHS.value - 1)
        row.update(
          vmapped_one_epoch_seconds=one_epoch,
          vmapped_fixed_seconds=one_epoch - per_epoch,
          vmapped_epoch_seconds=per_epoch,
          grid_minutes_vmapped_estimate=math.ceil(_GRID_RUNS.value / k)
          * (one_epoch - per_epoch + _EPOCHS_PER_RUN.value * per_epoch)
          / 60,
        )
      print(f"K={k}: {row}", flush=True)
      rows.append(row)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  machine.report(
    {
      "benchmark": "vmapped_sweep",
      "config": config.data.name,
      "kernel": config.model.kernel,
      "rows": rows,
      "peak_rss_gib": machine.peak_rss_gib(),
      **machine.describe(),
    },
    _OUTPUT.value,
  )


if __name__ == "__main__":
  app.run(main)
