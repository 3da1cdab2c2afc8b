r"""Recommendations out of a run: loading it, then every user's top-k scored and written.

  python -m benchmarks.bench_export                      # Baby scale: a 1-epoch baby_graph run
  python -m benchmarks.bench_export --preset=electronics --users=20000

baby: trains `configs/baby_graph.py` for one epoch (19,445 users, 7,050 items), then times
`serving.load_run` (set-up, restore, the final embeddings) and `serving.export` of the top-50
of every user (TSV and Parquet), twice: the first call includes the scoring program's
compilations, the second is warm. electronics: no training; random 64-d embeddings and
1.27 M random training pairs at Electronics' size (192,403 users, 63,001 items) in a
`TrainedRun`, exported for the first `--users` users (all with --users=0), to show the time per
user and that memory stays bounded by the chunk. Peak RSS is reported after each part.
"""

import os
import shutil
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.serving import export, load_run
from alignrec_jax.serving.run import TrainedRun
from alignrec_jax.training import stage2
from benchmarks import machine

_CONFIG = config_flags.DEFINE_config_file("config", "configs/baby_graph.py", "Config (baby).")
_PRESET = flags.DEFINE_enum("preset", "baby", ["baby", "electronics"], "What to export.")
_USERS = flags.DEFINE_integer("users", 20000, "electronics: users exported (0: all).")
_K = flags.DEFINE_integer("k", 50, "Items per user.")
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/alignrec_bench_export", "Scratch.")


def _timed(fn, *args, **kwargs):
  start = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - start


def _baby(result: dict) -> None:
  config = _CONFIG.value
  config.train.max_epochs = 1
  run_dir = os.path.join(_WORKDIR.value, "run")
  shutil.rmtree(run_dir, ignore_errors=True)
  stage2.train_and_evaluate(config, run_dir)
  run, result["load_seconds"] = _timed(load_run, run_dir)
  result["peak_rss_gib_after_load"] = machine.peak_rss_gib()
  out = os.path.join(_WORKDIR.value, "export")
  for name in ("first", "warm"):
    record, seconds = _timed(export, run, out, k=_K.value)
    result[f"export_{name}_seconds"] = seconds
  result.update(
    users=run.num_users,
    items=run.num_items,
    rows=record["rows"],
    tsv_mib=os.path.getsize(os.path.join(out, "topk.tsv")) / 2**20,
  )


def _electronics(result: dict) -> None:
  num_users, num_items, pairs, dim = 192_403, 63_001, 1_270_000, 64
  rng = np.random.default_rng(0)
  users = np.sort(rng.integers(0, num_users, pairs))
  items = rng.integers(0, num_items, pairs)
  indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=num_users))])
  count = _USERS.value or num_users  # the first `count` users are exported
  valid = (np.zeros(num_users + 1, np.int64), np.zeros(0, np.int64))
  run = TrainedRun(
    None,
    _WORKDIR.value,
    0,
    rng.standard_normal((count, dim), np.float32),
    rng.standard_normal((num_items, dim), np.float32),
    None,
    None,
    (indptr, items),
    valid,
  )
  result["peak_rss_gib_before"] = machine.peak_rss_gib()
  record, result["export_seconds"] = _timed(
    export, run, os.path.join(_WORKDIR.value, "export"), k=_K.value
  )
  result.update(
    users=count,
    items=num_items,
    rows=record["rows"],
    seconds_per_1000_users=result["export_seconds"] / count * 1000,
    extrapolated_all_users_seconds=result["export_seconds"] / count * num_users,
  )


def main(argv):
  del argv
  result = {"preset": _PRESET.value, "k": _K.value, **machine.describe()}
  (_baby if _PRESET.value == "baby" else _electronics)(result)
  result["peak_rss_gib"] = machine.peak_rss_gib()
  result["devices"] = [str(d) for d in jax.devices()]
  machine.report(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
