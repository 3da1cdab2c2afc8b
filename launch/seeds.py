r"""Runs one config over several seeds; prints mean and standard deviation per epoch and at best.

  python -m launch.seeds --config=configs/synthetic_baby.py --workdir=runs/parity \
      --config.train.max_epochs=3 --seeds=999,1000,1001 --reference=synthetic-baby

Each seed trains in WORKDIR/seed_N (resumable as usual). `--reference` names a table of the
authors' numbers (../shared/data/README.md) to print beside ours with the relative difference.
The result is also written to WORKDIR/seeds.json.
"""

import json
import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from alignrec_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "One sub-folder per seed.", required=True)
_SEEDS = flags.DEFINE_list("seeds", ["999", "1000", "1001"], "Seeds to run.")
_REFERENCE = flags.DEFINE_enum("reference", None, ["synthetic-baby", "lfm2k-lightgcn",
                                                   "lfm2k-alignrec-raw"],
                               "Authors' numbers to compare with.")

_MAX_EPOCH_ROWS = 10
METRICS = ("valid/recall@20", "valid/ndcg@20", "test/recall@10", "test/recall@20",
           "test/ndcg@10", "test/ndcg@20")

# The authors' public code on the same files, seed 999 (../shared/data/README.md).
# Per-epoch tables are keyed by epoch counted from 1; "best" is the best-validation epoch.
REFERENCE = {
    "synthetic-baby": {
        1: {"valid/recall@20": 0.0997, "valid/ndcg@20": 0.0398, "test/recall@10": 0.0590,
            "test/recall@20": 0.0993, "test/ndcg@10": 0.0302, "test/ndcg@20": 0.0406},
        2: {"valid/recall@20": 0.1028, "valid/ndcg@20": 0.0412, "test/recall@10": 0.0600,
            "test/recall@20": 0.1027, "test/ndcg@10": 0.0308, "test/ndcg@20": 0.0417},
        3: {"valid/recall@20": 0.1035, "valid/ndcg@20": 0.0415, "test/recall@10": 0.0603,
            "test/recall@20": 0.1036, "test/ndcg@10": 0.0311, "test/ndcg@20": 0.0421},
    },
    "lfm2k-lightgcn": {
        "best": {"valid/recall@20": 0.4190, "valid/ndcg@20": 0.2506, "test/recall@10": 0.2922,
                 "test/recall@20": 0.4181, "test/ndcg@10": 0.2418, "test/ndcg@20": 0.2903},
    },
    "lfm2k-alignrec-raw": {
        "best": {"valid/recall@20": 0.4119, "valid/ndcg@20": 0.2469, "test/recall@10": 0.2786,
                 "test/recall@20": 0.4052, "test/ndcg@10": 0.2307, "test/ndcg@20": 0.2799},
    },
}


def _read_epochs(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _flat_best(summary):
  return {f"{split}/{k}": v for split in ("valid", "test") for k, v in summary[split].items()}


def _row(label, values, reference):
  cells = []
  for metric in METRICS:
    mean, std = np.mean(values[metric]), np.std(values[metric])
    cell = f"{mean:.4f}±{std:.4f}"
    if reference and metric in reference:
      cell += f" ({reference[metric]:.4f}, {100 * (mean / reference[metric] - 1):+.1f}%)"
    cells.append(cell)
  return f"{label:<8}" + "  ".join(f"{c:<28}" for c in cells)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  runs = []
  for seed in map(int, _SEEDS.value):
    config = _CONFIG.value.copy_and_resolve_references()
    config.seed = seed
    workdir = os.path.join(_WORKDIR.value, f"seed_{seed}")
    summary = train.train_and_evaluate(config, workdir)
    runs.append({"seed": seed, "summary": summary, "epochs": _read_epochs(workdir)})
    print(f"seed {seed}: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
          f"test recall@20 {summary['test']['recall@20']:.4f}", flush=True)

  reference = REFERENCE.get(_REFERENCE.value, {})
  print(f"\nmean±std over seeds {_SEEDS.value}" +
        ("; in brackets: the authors' number and our relative difference" if reference else ""))
  print(f"{'epoch':<8}" + "  ".join(f"{m:<28}" for m in METRICS))
  num_epochs = min(len(r["epochs"]) for r in runs)
  # Per-epoch rows for short runs (the parity tables); long runs print the best epoch only.
  for epoch in range(num_epochs if num_epochs <= _MAX_EPOCH_ROWS else 0):
    values = {m: [r["epochs"][epoch][m] for r in runs] for m in METRICS}
    print(_row(str(epoch + 1), values, reference.get(epoch + 1)))
  best = {m: [_flat_best(r["summary"])[m] for r in runs] for m in METRICS}
  print(_row("best", best, reference.get("best")))
  print("best epochs (from 0): " + ", ".join(
      f"{r['summary']['best_epoch']} / {r['summary']['epochs_run']} run" for r in runs))
  with open(os.path.join(_WORKDIR.value, "seeds.json"), "w") as f:
    json.dump({"seeds": _SEEDS.value, "runs": runs}, f, indent=1)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
