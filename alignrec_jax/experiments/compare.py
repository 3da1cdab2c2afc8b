"""The paper's comparison on one dataset: every model x seeds, one protocol, one report.

Each entry of `ENTRIES` is a stage-2 model at its reference settings (MMRec's defaults for the
baselines: lr 1e-3 without decay, the feature files as given, not normalised; AlignRec as the
dataset's config says, on the raw features and on the stage-1 features). A model's base config
is the dataset config, or a config file of its own where one is given (e.g.
`configs/freedom_lfm2k.py`, which puts lfm2k's audio in MMRec's image slot as the parity runs
did). Runs are `runs.train_runs`' (WORKDIR/runs/MODEL/SETTING/seed_N, one worker
process each, resumable, read back when finished), selected on validation only (each run's
best validation epoch; the test split never chooses anything).

`write_report` writes WORKDIR/report.md: the metric table (mean ± std over seeds, each
column's best in bold), the long-tail (tail items) and short-history (users) breakdowns,
training time per model, and PNG plots: validation Recall@20 against epoch and against
wall-clock seconds (mean over seeds), and test Recall@20 by item-popularity bucket.
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
from alignrec_jax.data import load_mmrec
from alignrec_jax.errors import ConfigError
from alignrec_jax.evaluation.popularity import popularity_buckets, recall_by_bucket
from alignrec_jax.experiments import ablation
from alignrec_jax.experiments.inputs import feature_inputs
from alignrec_jax.experiments.runs import Run, train_runs
from alignrec_jax.serving.run import load_run
from alignrec_jax.training import reporting, stage2
from alignrec_jax.training.stage2_setup import dataset_folder

RESULT_FILE = "compare.json"
REPORT_FILE = "report.md"
NUM_POPULARITY_BUCKETS = 5
# MMRec's trainer, which the baselines' reference numbers come from: no lr decay, raw features.
_MMREC = (("optim.lr_decay", "1.0"), ("data.normalize_features", "False"))


@dataclasses.dataclass(frozen=True)
class Entry:
  """A model of the comparison: a registry model on a feature input, with its settings."""

  key: str  # the name on the command line and the runs' folder
  label: str  # the name in the report
  model: str  # `config.model.name`
  input_name: str  # "raw" or "stage1"
  overrides: tuple[tuple[str, str], ...] = ()  # applied to the dataset config, not to a model's own


ENTRIES = (
  Entry("bpr", "BPR-MF", "bpr", "raw", _MMREC),
  Entry("vbpr", "VBPR", "vbpr", "raw", _MMREC),
  Entry("lightgcn", "LightGCN", "lightgcn", "raw", _MMREC),
  Entry("freedom", "FREEDOM", "freedom", "raw", _MMREC),
  Entry("bm3", "BM3", "bm3", "raw", _MMREC),
  # MMRec's MGCN keeps a decay (0.96 every 50 epochs, the optim group's default).
  Entry("mgcn", "MGCN", "mgcn", "raw", (("data.normalize_features", "False"),)),
  Entry("alignrec_raw", "AlignRec (raw features)", "alignrec", "raw"),
  Entry("alignrec", "AlignRec (stage-1 features)", "alignrec", "stage1"),
)
TABLE_COLUMNS = (
  "valid/recall@20",
  "test/recall@10",
  "test/recall@20",
  "test/ndcg@10",
  "test/ndcg@20",
)
BREAKDOWN_COLUMNS = (
  "test/tail_recall@20",
  "test/tail_ndcg@20",
  "test_short/recall@20",
  "test_short/ndcg@20",
)


def pick(keys: Sequence[str] | None) -> tuple[Entry, ...]:
  """The entries named by `keys` (all when None), in the report's order."""
  if keys is None:
    return ENTRIES
  known = [e.key for e in ENTRIES]
  unknown = [k for k in keys if k not in known]
  if unknown:
    raise ConfigError(
      f"models: unknown {', '.join(map(repr, unknown))}; expected some of {', '.join(known)}"
    )
  return tuple(e for e in ENTRIES if e.key in keys)


def _run(entry: Entry, own_config: bool, inputs: Mapping[str, Sequence[str]], seed: int):
  """The entry's run for `seed` (its overrides apply only to the dataset config)."""
  overrides = (("model.name", entry.model),) + (() if own_config else entry.overrides)
  return Run(entry.key, tuple(inputs[entry.input_name]), overrides, seed)


def run_comparison(
  config: ml_collections.ConfigDict,
  workdir: str,
  seeds: Sequence[int],
  *,
  keys: Sequence[str] | None = None,
  model_configs: Mapping[str, ml_collections.ConfigDict] | None = None,
  stage1_features: str | None = None,
  parallel: int = 1,
) -> dict[str, Any]:
  """Trains (or reads back) every model x seed; returns the result, also in
  WORKDIR/compare.json: per model its label, settings and each seed's summary and epochs."""
  entries = pick(keys)
  model_configs = dict(model_configs or {})
  unknown = sorted(set(model_configs) - {e.key for e in entries})
  if unknown:
    raise ConfigError(f"model_configs: {', '.join(unknown)} not among the models compared")
  bases = {e.key: model_configs.get(e.key, config) for e in entries}
  for e in entries:
    stage2.check_config(bases[e.key])
  with files.WorkdirLock(workdir):
    # Stage 1 trains once, on the dataset config; each base's raw files are its own.
    stage1_input = (
      feature_inputs(config, workdir, ["stage1"], stage1_features=stage1_features)
      if any(e.input_name == "stage1" for e in entries)
      else {}
    )
    root = os.path.join(workdir, "runs")
    runs: dict[tuple[str, int], Run] = {}
    summaries: dict[Run, dict[str, Any]] = {}
    for e in entries:  # one model's seeds at a time: each model's own base config
      inputs = {**stage1_input, **feature_inputs(bases[e.key], workdir, ["raw"])}
      for seed in seeds:
        runs[(e.key, seed)] = _run(e, e.key in model_configs, inputs, seed)
      mine = [runs[(e.key, s)] for s in seeds]
      summaries.update(train_runs(mine, bases[e.key], root, parallel=parallel))
    models = []
    for e in entries:
      per_seed = []
      for seed in seeds:
        run = runs[(e.key, seed)]
        if run in summaries:
          folder = run.workdir(root)
          per_seed.append(
            {
              "seed": seed,
              "workdir": folder,
              "summary": {k: v for k, v in summaries[run].items() if k != "config"},
              "epochs": _curve(folder),
            }
          )
      models.append(
        {
          "key": e.key,
          "label": e.label,
          "model": e.model,
          "input": e.input_name,
          "config_file": "own" if e.key in model_configs else "dataset",
          "runs": per_seed,
        }
      )
    result = {"dataset": config.data.name, "seeds": list(seeds), "models": models}
    files.atomic_write(os.path.join(workdir, RESULT_FILE), json.dumps(result, indent=1))
  return result


def _curve(run_dir: str) -> list[dict[str, float]]:
  """Per epoch: validation Recall@20 and the seconds spent so far (training + evaluation)."""
  out, elapsed = [], 0.0
  for record in reporting.read_metrics(run_dir):
    elapsed += record.get("train_seconds", 0.0) + record.get("eval_seconds", 0.0)
    if "valid/recall@20" in record:
      out.append(
        {
          "epoch": record["epoch"],
          "seconds": elapsed,
          "train_seconds": record.get("train_seconds", 0.0),
          "valid/recall@20": record["valid/recall@20"],
        }
      )
  return out


def _value(summary: Mapping[str, Any], column: str) -> float | None:
  split, _, metric = column.partition("/")
  return summary.get(split, {}).get(metric)


def _table(models: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
  cells = [
    [[v for r in m["runs"] if (v := _value(r["summary"], c)) is not None] for c in columns]
    for m in models
  ]
  best = [
    max((np.mean(row[i]) for row in cells if row[i]), default=None) for i in range(len(columns))
  ]
  lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for m, row in zip(models, cells, strict=True):
    shown = []
    for i, values in enumerate(row):
      text = f"{np.mean(values):.4f}±{np.std(values):.4f}" if values else "-"
      shown.append(f"**{text}**" if values and np.mean(values) == best[i] else text)
    lines.append(f"| {m['label']} | " + " | ".join(shown) + " |")
  return lines


def _time_table(models: Sequence[Mapping[str, Any]]) -> list[str]:
  lines = [
    "| model | best epoch | epochs run | seconds an epoch (training) "
    "| seconds a run (training + evaluation) |",
    "|---|---|---|---|---|",
  ]
  for m in models:
    runs = m["runs"]
    if not runs:
      lines.append(f"| {m['label']} | - | - | - | - |")
      continue
    per_epoch = [np.median([e["train_seconds"] for e in r["epochs"]]) for r in runs if r["epochs"]]
    seconds = [r["epochs"][-1]["seconds"] for r in runs if r["epochs"]]
    lines.append(
      f"| {m['label']} | {', '.join(str(r['summary']['best_epoch']) for r in runs)} | "
      f"{', '.join(str(r['summary']['epochs_run']) for r in runs)} | "
      f"{np.mean(per_epoch):.2f} | {np.mean(seconds):.0f} |"
    )
  return lines


def popularity_recall(
  result: Mapping[str, Any], num_buckets: int = NUM_POPULARITY_BUCKETS, k: int = 20
) -> dict[str, list[float]]:
  """model key -> test recall@k per popularity bucket (rarest first), mean over seeds, from
  each run's best checkpoint."""
  out: dict[str, list[float]] = {}
  buckets = None
  for m in result["models"]:
    per_seed = []
    for r in m["runs"]:
      run = load_run(r["workdir"])
      if buckets is None:
        dataset = load_mmrec(dataset_folder(run.config.data, r["workdir"]))
        buckets = popularity_buckets(dataset, num_buckets)
        users = np.unique(dataset.test.users)
      top = np.concatenate([items for _, items, _ in run.top_k(users, k)])
      per_seed.append(
        recall_by_bucket(top, users, dataset.test.users, dataset.test.items, buckets)["recall"]
      )
    if per_seed:
      out[m["key"]] = np.mean(per_seed, axis=0).tolist()
  return out


def _plots(
  result: Mapping[str, Any], by_bucket: Mapping[str, list[float]], workdir: str
) -> list[str]:
  """Writes the report's PNGs; returns their file names (none without matplotlib)."""
  try:
    import matplotlib  # an optional dependency, imported only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    reporting.warn("the report's plots need matplotlib: pip install -e '.[plot]'")
    return []
  written = []
  for name, x_key, x_label in (
    ("valid_recall_by_epoch.png", "epoch", "epoch"),
    (
      "valid_recall_by_time.png",
      "seconds",
      "seconds of training and evaluation (the first epoch compiles)",
    ),
  ):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in result["models"]:
      curves = [r["epochs"] for r in m["runs"] if r["epochs"]]
      if not curves:
        continue
      n = min(len(c) for c in curves)  # the epochs every seed ran
      x = np.mean([[e[x_key] for e in c[:n]] for c in curves], axis=0)
      y = np.mean([[e["valid/recall@20"] for e in c[:n]] for c in curves], axis=0)
      ax.plot(x, y, label=m["label"])
    ax.set_xlabel(x_label)
    ax.set_ylabel("validation Recall@20 (mean over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, name), dpi=110)
    plt.close(fig)
    written.append(name)
  if by_bucket:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = {m["key"]: m["label"] for m in result["models"]}
    width = 0.8 / len(by_bucket)
    for i, (key, values) in enumerate(by_bucket.items()):
      ax.bar(np.arange(len(values)) + i * width, values, width, label=labels[key])
    ax.set_xticks(np.arange(NUM_POPULARITY_BUCKETS) + 0.4 - width / 2)
    ax.set_xticklabels([f"{i + 1}" for i in range(NUM_POPULARITY_BUCKETS)])
    ax.set_xlabel("item popularity bucket (training count; 1 = rarest fifth of the items)")
    ax.set_ylabel("test Recall@20 of the bucket's held-out items")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "recall_by_popularity.png"), dpi=110)
    plt.close(fig)
    written.append("recall_by_popularity.png")
  return written


def run_ablation(
  config: ml_collections.ConfigDict,
  workdir: str,
  result: Mapping[str, Any],
  *,
  keys: Sequence[str] | None = None,
  stage1_features: str | None = None,
  parallel: int = 1,
) -> dict[str, Any]:
  """AlignRec's ablation on the comparison's dataset config, seeds and stage 1, in its folder:
  the variants that are the comparison's AlignRec runs ("full", "raw") are read back from them;
  the result is also kept in WORKDIR/compare.json for the report."""
  compared = {m["key"] for m in result["models"]}
  shared = {
    variant: key
    for variant, key in (("full", "alignrec"), ("raw", "alignrec_raw"))
    if key in compared
  }
  ablated = ablation.run_ablation(
    config,
    workdir,
    result["seeds"],
    keys=keys,
    stage1_features=stage1_features,
    parallel=parallel,
    shared_folders=shared,
  )
  updated = {**result, "ablation": ablated}
  files.atomic_write(os.path.join(workdir, RESULT_FILE), json.dumps(updated, indent=1))
  return updated


def write_report(result: Mapping[str, Any], workdir: str) -> str:
  """Writes WORKDIR/report.md and its plots; returns the report's text."""
  models = result["models"]
  by_bucket = popularity_recall(result)
  plots = _plots(result, by_bucket, workdir)
  lines = [
    f"# {result['dataset']}: {len(models)} models, seeds {result['seeds']}",
    "",
    "Every number is at each run's best validation epoch (selected on validation Recall@20; "
    "the test split chooses nothing); mean ± standard deviation over seeds (the population one, "
    "numpy's default), each column's best in bold.",
    "",
    *_table(models, TABLE_COLUMNS),
    "",
    "## Long tail and short histories",
    "",
    "tail: items outside the 20% most popular in training; short: the 20% of users with the "
    "fewest training interactions.",
    "",
    *_table(models, BREAKDOWN_COLUMNS),
    "",
    "## Test Recall@20 by item popularity",
    "",
    f"Items in {NUM_POPULARITY_BUCKETS} equal buckets by training count (1 = rarest); each "
    "cell: the share of the bucket's test interactions found in the user's top 20 (mean over "
    "seeds).",
    "",
    "| model | " + " | ".join(str(b + 1) for b in range(NUM_POPULARITY_BUCKETS)) + " |",
    "|---" * (NUM_POPULARITY_BUCKETS + 1) + "|",
    *(
      f"| {m['label']} | " + " | ".join(f"{v:.4f}" for v in by_bucket[m["key"]]) + " |"
      for m in models
      if m["key"] in by_bucket
    ),
    "",
    "## Training time",
    "",
    *_time_table(models),
    "",
  ]
  if "ablation" in result:
    lines += [
      "## Ablation (AlignRec)",
      "",
      "Each variant changes one thing of AlignRec on the stage-1 features (`launch.ablate`'s "
      "variants; the full model and the raw-feature one are the runs above).",
      "",
      ablation.format_markdown(result["ablation"]),
    ]
  if plots:
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
  text = "\n".join(lines)
  files.atomic_write(os.path.join(workdir, REPORT_FILE), text)
  return text
