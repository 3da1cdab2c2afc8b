"""One config over several seeds: mean and standard deviation per epoch and at the best epoch.

Each seed is `runs.stage2` in WORKDIR/seed_N (resumed, or read back when finished). `REFERENCE`
holds the authors' numbers on the shared datasets (../shared/data/README.md), printed beside
ours with the relative difference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from alignrec_jax import files
from alignrec_jax.experiments import runs
from alignrec_jax.training import reporting

METRICS = (
  "valid/recall@20",
  "valid/ndcg@20",
  "test/recall@10",
  "test/recall@20",
  "test/ndcg@10",
  "test/ndcg@20",
)
# Runs up to this many epochs get a row per epoch (the parity tables); longer ones the best only.
MAX_EPOCH_ROWS = 10

# The authors' public code on the same files, seed 999 (../shared/data/README.md).
# Per-epoch tables are keyed by epoch counted from 1; "best" is the best-validation epoch.
REFERENCE = {
  "synthetic-baby": {
    1: {
      "valid/recall@20": 0.0997,
      "valid/ndcg@20": 0.0398,
      "test/recall@10": 0.0590,
      "test/recall@20": 0.0993,
      "test/ndcg@10": 0.0302,
      "test/ndcg@20": 0.0406,
    },
    2: {
      "valid/recall@20": 0.1028,
      "valid/ndcg@20": 0.0412,
      "test/recall@10": 0.0600,
      "test/recall@20": 0.1027,
      "test/ndcg@10": 0.0308,
      "test/ndcg@20": 0.0417,
    },
    3: {
      "valid/recall@20": 0.1035,
      "valid/ndcg@20": 0.0415,
      "test/recall@10": 0.0603,
      "test/recall@20": 0.1036,
      "test/ndcg@10": 0.0311,
      "test/ndcg@20": 0.0421,
    },
  },
  "lfm2k-lightgcn": {
    "best": {
      "valid/recall@20": 0.4190,
      "valid/ndcg@20": 0.2506,
      "test/recall@10": 0.2922,
      "test/recall@20": 0.4181,
      "test/ndcg@10": 0.2418,
      "test/ndcg@20": 0.2903,
    },
  },
  "lfm2k-freedom": {
    "best": {
      "valid/recall@20": 0.4065,
      "valid/ndcg@20": 0.2403,
      "test/recall@10": 0.2742,
      "test/recall@20": 0.4031,
      "test/ndcg@10": 0.2268,
      "test/ndcg@20": 0.2768,
    },
  },
  "lfm2k-alignrec-raw": {
    "best": {
      "valid/recall@20": 0.4119,
      "valid/ndcg@20": 0.2469,
      "test/recall@10": 0.2786,
      "test/recall@20": 0.4052,
      "test/ndcg@10": 0.2307,
      "test/ndcg@20": 0.2799,
    },
  },
}


def run_seeds(
  config: ml_collections.ConfigDict, workdir: str, seeds: Sequence[int]
) -> list[dict[str, Any]]:
  """Runs (or reads back) each seed; returns [{"seed", "summary", "epochs"}] and writes
  WORKDIR/seeds.json."""
  results = []
  for seed in seeds:
    seeded = config.copy_and_resolve_references()
    seeded.seed = seed
    run_dir = os.path.join(workdir, f"seed_{seed}")
    summary = runs.stage2(seeded, run_dir)
    results.append({"seed": seed, "summary": summary, "epochs": reporting.read_metrics(run_dir)})
  files.atomic_write(
    os.path.join(workdir, "seeds.json"),
    json.dumps({"seeds": list(seeds), "runs": results}, indent=1),
  )
  return results


def _best(summary: Mapping[str, Any]) -> dict[str, float]:
  return {f"{split}/{k}": v for split in ("valid", "test") for k, v in summary[split].items()}


def _row(
  label: str, values: Mapping[str, list[float]], reference: Mapping[str, float] | None
) -> str:
  cells = []
  for metric in METRICS:
    mean, std = np.mean(values[metric]), np.std(values[metric])
    cell = f"{mean:.4f}±{std:.4f}"
    if reference and metric in reference:
      cell += f" ({reference[metric]:.4f}, {100 * (mean / reference[metric] - 1):+.1f}%)"
    cells.append(cell)
  return f"{label:<8}" + "  ".join(f"{c:<28}" for c in cells)


def format_table(results: Sequence[Mapping[str, Any]], *, reference: str | None = None) -> str:
  """Mean ± std over the seeds per epoch (short runs) and at the best epoch, beside
  `REFERENCE[reference]` when given."""
  numbers = REFERENCE.get(reference, {}) if reference else {}
  seeds = [r["seed"] for r in results]
  lines = [
    f"mean±std over seeds {seeds}"
    + ("; in brackets: the authors' number and our relative difference" if numbers else ""),
    f"{'epoch':<8}" + "  ".join(f"{m:<28}" for m in METRICS),
  ]
  num_epochs = min(len(r["epochs"]) for r in results)
  for epoch in range(num_epochs if num_epochs <= MAX_EPOCH_ROWS else 0):
    values = {m: [r["epochs"][epoch][m] for r in results] for m in METRICS}
    lines.append(_row(str(epoch + 1), values, numbers.get(epoch + 1)))
  best = {m: [_best(r["summary"])[m] for r in results] for m in METRICS}
  lines.append(_row("best", best, numbers.get("best")))
  lines.append(
    "best epochs (from 0): "
    + ", ".join(f"{r['summary']['best_epoch']} / {r['summary']['epochs_run']} run" for r in results)
  )
  return "\n".join(lines)
