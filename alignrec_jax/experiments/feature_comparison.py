"""Raw features against stage-1 features, side by side: the paper's three feature-quality checks.

For a dataset whose two-stage run (`launch.pipeline`) is in WORKDIR:

  (a) content-only recommendation, no ID training: item-kNN (k = 10) over each feature set
      (`feature_quality.evaluate_item_knn`);
  (b) robustness: one modality missing for a fraction of the items (50% by default). Raw: that
      modality's feature rows are zeroed for those items; stage 1: the trained encoder encodes
      the items with that modality absent. Stage 2 is then trained on each degraded feature
      set, and its test metrics sit beside those of the intact features;
  (c) the trained stage 2's metrics for the users with the shortest training histories
      (`config.eval.short_history_fraction`, at the best validation epoch).

Raw feature files (`config.data.features`) and stage-1 modalities
(`config.stage1.data.modalities`)
are paired by position (ml100k: text_feat.npy <-> text, genre_feat.npy <-> genre), so "the text
is missing" removes the same items' text from both. Every stage-2 run lives in its own folder
under WORKDIR/feature_quality and is resumed (or reused, when finished) by a second call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from alignrec_jax import files
from alignrec_jax.data import combine_features
from alignrec_jax.data import content as content_lib
from alignrec_jax.errors import WorkdirError
from alignrec_jax.evaluation import evaluate_item_knn
from alignrec_jax.experiments import runs
from alignrec_jax.experiments.inputs import paired_modalities
from alignrec_jax.training import reporting, stage1
from alignrec_jax.training.stage2_setup import dataset_folder, load_dataset

RESULT_FILE = "feature_quality.json"


def _stage2(
  config: ml_collections.ConfigDict, features: Sequence[str], workdir: str
) -> dict[str, Any]:
  """Stage 2 on the given feature files (`runs.stage2`: a finished run is read back)."""
  run = config.copy_and_resolve_references()
  # Absolute: the loader reads a relative feature path inside the dataset folder.
  run.data.features = tuple(os.path.abspath(f) for f in features)
  return runs.stage2(run, workdir)


def _zeroed_copy(source: str, rows: np.ndarray, out: str) -> str:
  values = np.load(source)
  values[rows] = 0.0
  files.atomic_write(out, lambda f: np.save(f, values))
  return out


def _test_metrics(summary: dict[str, Any], split: str = "test") -> dict[str, float]:
  return {k: summary[split][k] for k in ("recall@20", "ndcg@20")}


def compare(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  missing_fraction: float = 0.5,
  missing: Sequence[str] | None = None,
  knn_k: int = 10,
) -> dict[str, Any]:
  """Runs (a), (b) and (c) for the raw and the stage-1 features; returns the nested results.

  Args:
    config: the experiment config the pipeline ran with.
    workdir: the pipeline's workdir (WORKDIR/stage1 must hold a finished stage 1).
    missing_fraction: the fraction of items that lose the modality in (b).
    missing: stage-1 modality names to remove in turn (default: each of them).
    knn_k: neighbours of the item-kNN in (a).
  """
  with files.WorkdirLock(workdir):
    return _compare(
      config, workdir, missing_fraction=missing_fraction, missing=missing, knn_k=knn_k
    )


def _compare(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  missing_fraction: float,
  missing: Sequence[str] | None,
  knn_k: int,
) -> dict[str, Any]:
  folder = dataset_folder(config.data, workdir)
  dataset = load_dataset(config.data, workdir)
  raw_files = [os.path.join(folder, f) for f in config.data.features]
  stage1_file = stage1.finished_output(
    os.path.join(workdir, "stage1"), stage1.run_identity(config.stage1, folder, config.seed)
  )
  if stage1_file is None:
    raise WorkdirError(
      f"{workdir}/stage1 holds no finished stage-1 output for this config: "
      "run launch.pipeline with the same config and workdir first"
    )
  out_dir = os.path.join(workdir, "feature_quality")
  os.makedirs(out_dir, exist_ok=True)
  results: dict[str, Any] = {"dataset": dataset.name, "missing_fraction": missing_fraction}

  # (a) Content-only item-kNN.
  raw_features, raw_description = combine_features(
    dataset.features, normalize=config.data.normalize_features
  )
  stage1_features = np.load(stage1_file)
  results["item_knn"] = {
    name: evaluate_item_knn(
      dataset, feats, k=knn_k, ks=tuple(config.eval.ks), chunk_size=config.eval.chunk_size
    )
    for name, feats in (("raw", raw_features), ("stage1", stage1_features))
  }
  reporting.log(f"(a) item-kNN done; raw features: {raw_description}")

  # Intact features: stage 2 on the raw concatenation, and the pipeline's own stage 2.
  summaries = {
    "raw": _stage2(config, raw_files, os.path.join(out_dir, "raw")),
    "stage1": _stage2(config, [stage1_file], os.path.join(workdir, "stage2")),
  }

  # (b) A modality missing for a fraction of the items.
  pairs = paired_modalities(config)
  wanted = [name for _, name in pairs] if missing is None else list(missing)
  content = None
  for raw_file, name in pairs:
    if name not in wanted:
      continue
    rows = content_lib.missing_items(dataset.num_items, missing_fraction, config.seed)
    tag = f"missing_{name}"
    degraded = [
      _zeroed_copy(path, rows, os.path.join(out_dir, f"{tag}_{os.path.basename(path)}"))
      if os.path.basename(path) == raw_file
      else path
      for path in raw_files
    ]
    summaries[f"raw_{tag}"] = _stage2(config, degraded, os.path.join(out_dir, f"raw_{tag}"))

    encoded = os.path.join(out_dir, f"{tag}_{stage1.FEATURE_FILE}")
    if not os.path.exists(encoded):
      if content is None:
        content = content_lib.load_content(
          folder,
          config.stage1.data.modalities,
          num_items=dataset.num_items,
          text_max_tokens=config.stage1.data.text_max_tokens,
          vector_tokens=config.stage1.model.vector_tokens,
        )
      params, module = stage1.restore_encoder(config.stage1, content, workdir, seed=config.seed)
      dropped = content_lib.drop_modality(content, name, missing_fraction, config.seed)
      features = stage1.encode_items(
        params, module, dropped.inputs, config.stage1.train.encode_batch_size
      )
      files.atomic_write(encoded, lambda f, a=features: np.save(f, a))
    summaries[f"stage1_{tag}"] = _stage2(config, [encoded], os.path.join(out_dir, f"stage1_{tag}"))

  results["stage2_test"] = {k: _test_metrics(s) for k, s in summaries.items()}
  # (c) Short-history users, at each run's best validation epoch.
  results["short_history_test"] = {
    k: _test_metrics(s, "test_short") for k, s in summaries.items() if "test_short" in s
  }
  files.atomic_write(os.path.join(workdir, RESULT_FILE), json.dumps(results, indent=1))
  return results


def format_table(results: dict[str, Any]) -> str:
  """The three checks as one plain-text table: rows are checks, columns raw and stage 1."""

  def cell(metrics: dict[str, float] | None) -> str:
    if metrics is None:
      return f"{'-':>22}"
    return f"{metrics['recall@20']:>10.4f} / {metrics['ndcg@20']:<9.4f}"

  lines = [f"{'test R@20 / N@20':<40}{'raw features':>22}{'stage-1 features':>24}", "-" * 86]
  knn = results["item_knn"]
  lines.append(
    f"{'(a) item-kNN, no ID training':<40}{cell(_test_metrics(knn['raw']))}  "
    f"{cell(_test_metrics(knn['stage1']))}"
  )
  stage2 = results["stage2_test"]
  lines.append(
    f"{'    stage 2, intact features':<40}{cell(stage2.get('raw'))}  {cell(stage2.get('stage1'))}"
  )
  for key in sorted(k for k in stage2 if k.startswith("raw_missing_")):
    tag = key.removeprefix("raw_")
    label = (
      f"(b) stage 2, {tag.removeprefix('missing_')} missing for {results['missing_fraction']:.0%}"
    )
    lines.append(f"{label:<40}{cell(stage2.get(key))}  {cell(stage2.get('stage1_' + tag))}")
  short = results["short_history_test"]
  lines.append(
    f"{'(c) stage 2, shortest-history users':<40}{cell(short.get('raw'))}  "
    f"{cell(short.get('stage1'))}"
  )
  return "\n".join(lines)
