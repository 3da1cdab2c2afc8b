"""AlignRec's ablations: the full model against itself with one part taken out, over seeds.

The paper's ablation (its Table 4) removes one alignment at a time. Each variant here is the
experiment config with one change (`VARIANTS`): without the content-category alignment (the
InfoNCE terms, `cl_weight` 0), without the user-item alignment (`uia_weight` 0), without the
similarity-preservation term (`sim_weight` 0), with the item features frozen instead of
fine-tuned (or the reverse, whichever the config does not do), and without stage 1 (stage 2 on
the raw features). Every variant but the last reads the stage-1 features. The runs are
`runs.train_runs`' (WORKDIR/runs/INPUT/SETTING/seed_N, one worker process each, resumable,
read back when finished); the table gives each variant's mean ± std over seeds at its best
validation epoch, @10 and @20, for all users, for the shortest-history fraction of users
(`config.eval.short_history_fraction`, reported by every run) and for the authors' cold-user
rule: the users with fewer than `sparse_below` (4) training interactions, evaluated from each
run's best checkpoint, with the cohort's size (on datasets where it is empty, it is left out).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from alignrec_jax import files
from alignrec_jax.data import Dataset, load_mmrec
from alignrec_jax.errors import ConfigError
from alignrec_jax.evaluation import EvalData, evaluate, make_eval_data, restrict_heldout
from alignrec_jax.experiments.inputs import feature_inputs
from alignrec_jax.experiments.runs import Run, train_runs
from alignrec_jax.serving.run import load_run
from alignrec_jax.training import stage2
from alignrec_jax.training.stage2_setup import dataset_folder

# The authors' cold-user rule: fewer than this many training interactions.
SPARSE_BELOW = 4
RESULT_FILE = "ablation.json"
TABLE_FILE = "ablation.md"
# Columns of the table: (summary split, metric).
COLUMNS = tuple(
  (split, f"{metric}@{k}")
  for split in ("valid", "test")
  for metric in ("recall", "ndcg")
  for k in (10, 20)
)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the ablation: stage 2 on `input_name`'s features with `overrides` applied."""

  key: str  # the name on the command line
  label: str  # the row's name in the table
  input_name: str  # "stage1" or "raw"
  overrides: tuple[tuple[str, str], ...] = ()


def variants(config: ml_collections.ConfigDict) -> tuple[Variant, ...]:
  """Every ablation of `config` (an AlignRec config), the full model first."""
  fine_tuned = bool(config.model.alignrec.trainable_features)
  return (
    Variant("full", "AlignRec", "stage1"),
    Variant("no_cca", "w/o CCA (content-category)", "stage1", (_loss("cl_weight"),)),
    Variant("no_uia", "w/o UIA (user-item)", "stage1", (_loss("uia_weight"),)),
    Variant("no_sim", "w/o similarity term", "stage1", (_loss("sim_weight"),)),
    Variant(
      "frozen" if fine_tuned else "fine_tuned",
      "features frozen" if fine_tuned else "features fine-tuned",
      "stage1",
      (("model.alignrec.trainable_features", str(not fine_tuned)),),
    ),
    Variant("raw", "w/o stage 1 (raw features)", "raw"),
  )


def _loss(weight: str) -> tuple[str, str]:
  return (f"model.alignrec.loss.{weight}", "0.0")


def pick(config: ml_collections.ConfigDict, keys: Sequence[str] | None) -> tuple[Variant, ...]:
  """The variants named by `keys` (all when None), in the table's order.

  Raises:
    ConfigError: the config's model is not AlignRec, or a key names no variant.
  """
  if config.model.name != "alignrec":
    raise ConfigError(
      f"model.name: the ablation takes AlignRec apart, got {config.model.name!r}; "
      "use --config.model.name=alignrec"
    )
  every = variants(config)
  if keys is None:
    return every
  known = {v.key for v in every}
  unknown = [k for k in keys if k not in known]
  if unknown:
    raise ConfigError(
      f"variants: unknown {', '.join(map(repr, unknown))}; expected some of {', '.join(known)}"
    )
  return tuple(v for v in every if v.key in keys)


def sparse_users(dataset: Dataset, below: int = SPARSE_BELOW) -> np.ndarray:
  """The users with at least one and fewer than `below` training interactions (ascending ids)."""
  counts = np.bincount(np.asarray(dataset.train.users), minlength=dataset.num_users)
  return np.flatnonzero((counts > 0) & (counts < below)).astype(np.int32)


def sparse_metrics(run_dir: str, data: EvalData, ks: Sequence[int]) -> dict[str, dict[str, float]]:
  """{"valid": ..., "test": ...} of the run's best checkpoint on the cohort's evaluation data."""
  run = load_run(run_dir)
  return evaluate(run.user_embeddings, run.item_embeddings, data, ks=tuple(ks))


def run_ablation(
  config: ml_collections.ConfigDict,
  workdir: str,
  seeds: Sequence[int],
  *,
  keys: Sequence[str] | None = None,
  stage1_features: str | None = None,
  parallel: int = 1,
  sparse_below: int = SPARSE_BELOW,
  shared_folders: Mapping[str, str] | None = None,
) -> dict[str, Any]:
  """Trains (or reads back) every variant x seed; returns the result and writes it to
  WORKDIR/ablation.json, its tables to WORKDIR/ablation.md.

  `shared_folders` maps a variant with no overrides ("full", "raw") to the folder under
  WORKDIR/runs where an identical run already lives (`launch.compare`'s "alignrec" and
  "alignrec_raw", which name the model): the variant is that run, read back, not trained twice.

  Returns:
    {"seeds", "sparse_users" (the authors' cohort size), "rows": [{"key", "label", "input",
    "overrides", "runs": [{seed, best_epoch, summary splits, "sparse": {...}}]}]}.
  """
  chosen = pick(config, keys)
  stage2.check_config(config)
  with files.WorkdirLock(workdir):
    inputs = feature_inputs(
      config,
      workdir,
      sorted({v.input_name for v in chosen}, key=["stage1", "raw"].index),
      stage1_features=stage1_features,
    )
    shared = dict(shared_folders or {})

    def run_of(v: Variant, seed: int) -> Run:
      files = tuple(inputs[v.input_name])
      if v.key in shared and not v.overrides:  # the comparison's run of the same settings
        return Run(shared[v.key], files, (("model.name", "alignrec"),), seed)
      return Run(v.input_name, files, v.overrides, seed)

    runs = {(v.key, seed): run_of(v, seed) for v in chosen for seed in seeds}
    root = os.path.join(workdir, "runs")
    summaries = train_runs(list(runs.values()), config, root, parallel=parallel)
    dataset = load_mmrec(dataset_folder(config.data, workdir))
    cohort = sparse_users(dataset, sparse_below)
    # One evaluation index for the cohort, shared by every run (they share the dataset).
    cohort_data = (
      make_eval_data(
        restrict_heldout(dataset, cohort),
        chunk_size=config.eval.chunk_size,
        head_fraction=config.eval.head_fraction,
      )
      if cohort.size
      else None
    )
    rows = []
    for v in chosen:
      row_runs = []
      for seed in seeds:
        run = runs[(v.key, seed)]
        if run not in summaries:
          continue  # failed; train_runs said so
        summary = summaries[run]
        record = {"seed": seed, "best_epoch": summary["best_epoch"]}
        record.update(
          {k: summary[k] for k in ("valid", "test", "valid_short", "test_short") if k in summary}
        )
        if cohort.size:
          record["sparse"] = sparse_metrics(run.workdir(root), cohort_data, config.eval.ks)
        row_runs.append(record)
      rows.append(
        {
          "key": v.key,
          "label": v.label,
          "input": v.input_name,
          "overrides": [list(o) for o in v.overrides],
          "runs": row_runs,
        }
      )
    result = {
      "seeds": list(seeds),
      "sparse_below": sparse_below,
      "sparse_users": int(cohort.size),
      "short_history_fraction": float(config.eval.short_history_fraction),
      "rows": rows,
    }
    files.atomic_write(os.path.join(workdir, RESULT_FILE), json.dumps(result, indent=1))
    files.atomic_write(os.path.join(workdir, TABLE_FILE), format_markdown(result))
  return result


def _cell(values: Sequence[float]) -> str:
  return f"{np.mean(values):.4f}±{np.std(values):.4f}" if values else "-"


def _values(runs: Sequence[Mapping[str, Any]], getter, metric: str) -> list[float]:
  return [split[metric] for r in runs if (split := getter(r)) is not None]


def format_markdown(result: Mapping[str, Any]) -> str:
  """The ablation as Markdown tables (mean ± std over seeds; each column's best mean in bold):
  all users, then each cold-user cohort."""
  at20 = ("recall@20", "ndcg@20")
  tables = [
    ("all users", [(f"{s} {m}", lambda r, s=s: r.get(s), m) for s, m in COLUMNS]),
  ]
  if result["short_history_fraction"]:
    pct = round(100 * result["short_history_fraction"])
    tables.append(
      (
        f"the {pct}% of users with the shortest training histories",
        [(f"test {m}", lambda r: r.get("test_short"), m) for m in at20],
      )
    )
  if result["sparse_users"]:
    tables.append(
      (
        f"the {result['sparse_users']} users with fewer than {result['sparse_below']} training "
        "interactions" + (" (the authors' cold-user rule)" if result["sparse_below"] == 4 else ""),
        [(f"test {m}", lambda r: r.get("sparse", {}).get("test"), m) for m in at20],
      )
    )
  lines = []
  for title, columns in tables:
    lines += [
      f"{title}, mean ± std over seeds {list(result['seeds'])} (population std):",
      "",
    ]
    lines.append("| variant | " + " | ".join(name for name, _, _ in columns) + " |")
    lines.append("|---" * (len(columns) + 1) + "|")
    cells = [
      (row["label"], [_values(row["runs"], get, metric) for _, get, metric in columns])
      for row in result["rows"]
    ]
    best = [
      max((np.mean(c[i]) for _, c in cells if c[i]), default=None) for i in range(len(columns))
    ]
    for label, row_cells in cells:
      shown = [
        f"**{_cell(v)}**" if v and np.mean(v) == best[i] else _cell(v)
        for i, v in enumerate(row_cells)
      ]
      lines.append(f"| {label} | " + " | ".join(shown) + " |")
    lines.append("")
  if not result["sparse_users"]:
    lines.append(
      f"No user has fewer than {result['sparse_below']} training interactions here: the "
      "authors' cold-user cohort is empty."
    )
  return "\n".join(lines).rstrip() + "\n"
