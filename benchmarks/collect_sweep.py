r"""Files a finished `launch.sweep` under benchmarks/results: its table and every run.

  python -m benchmarks.collect_sweep --sweep=runs/ml100k_sweep_cpu --dataset=ml100k \
      --table=benchmarks/results/sweep_ml100k_raw_cpu.json \
      --runs=benchmarks/results/sweep_runs_cpu.jsonl

Copies SWEEP/sweep.json to --table and appends one JSON line per finished run (input,
setting, seed, best epoch, validation / test / short-history Recall@20 and NDCG@20) to --runs,
skipping runs already there (same dataset, input, setting and seed), so it can be rerun as a
sweep fills in.
"""

import glob
import json
import os
import shutil
from typing import Any

from absl import app, flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command line's flags, defined only when run as a script: the tests import this module
  beside the launchers, and absl checks every required flag it knows at each parse."""
  flags.DEFINE_string("sweep", None, "The sweep's workdir.", required=True)
  flags.DEFINE_string("dataset", None, "Dataset name in the records.", required=True)
  flags.DEFINE_string("table", None, "Copy SWEEP/sweep.json here.")
  flags.DEFINE_string(
    "runs", None, "Append new run records to this JSON-lines file.", required=True
  )


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
    record = {
      "dataset": dataset,
      "input": os.path.basename(input_dir),
      "setting": os.path.basename(setting_dir),
      "seed": int(os.path.basename(seed_dir).removeprefix("seed_")),
      "best_epoch": summary["best_epoch"],
      "epochs_run": summary["epochs_run"],
    }
    for split in RECORD_SPLITS:
      for metric in RECORD_METRICS:
        if split in summary:
          record[f"{split}/{metric}"] = summary[split][metric]
    records.append(record)
  return sorted(records, key=lambda r: (r["input"], r["setting"], r["seed"]))


def _key(record):
  return record["dataset"], record["input"], record["setting"], record["seed"]


def main(argv):
  del argv
  known = set()
  if os.path.exists(FLAGS.runs):
    with open(FLAGS.runs) as f:
      known = {_key(json.loads(line)) for line in f if line.strip()}
  records = run_records(os.path.join(FLAGS.sweep, "runs"), FLAGS.dataset)
  new = [r for r in records if _key(r) not in known]
  with open(FLAGS.runs, "a") as f:
    for record in new:
      f.write(json.dumps(record) + "\n")
  print(f"{len(records)} finished runs, {len(new)} new, appended to {FLAGS.runs}")
  if FLAGS.table:
    shutil.copyfile(os.path.join(FLAGS.sweep, "sweep.json"), FLAGS.table)
    print(f"table copied to {FLAGS.table}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
