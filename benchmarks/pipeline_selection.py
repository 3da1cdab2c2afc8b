r"""What `launch.pipeline`'s choice between inputs gives at full protocol, from finished sweeps.

  python -m benchmarks.pipeline_selection --dataset=ml100k --candidates=stage1,raw,text

Reads the per-run records of `launch.sweep` (benchmarks/results/sweep_runs_{cpu,gpu}.jsonl, as
`benchmarks.collect_sweep` files them). For each candidate input and seed, the setting with the
best validation Recall@20 is kept (the sweep's protocol); then, per seed, the input with the
best validation Recall@20 among the candidates is what the pipeline would keep. Prints each
input's test metrics (mean ± std over seeds) and the selection's, with the input chosen for
each seed. `--source=INPUT:FILE` picks which records file an input's runs come from where
both hold some (stage1: cpu, the current features; gpu holds the first ones).
"""

import json
import os

import numpy as np
from absl import app, flags

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

_DATASET = flags.DEFINE_string("dataset", None, "Dataset name in the records.", required=True)
_CANDIDATES = flags.DEFINE_list("candidates", ["stage1", "raw", "text"], "Inputs to choose from.")
_SOURCES = flags.DEFINE_list(
  "source", ["stage1:sweep_runs_cpu.jsonl"], "INPUT:FILE, where an input's runs come from."
)
_METRICS = ("recall@20", "ndcg@20")


def load_runs(dataset: str, sources: dict[str, str]) -> list[dict]:
  runs = []
  for name in ("sweep_runs_cpu.jsonl", "sweep_runs_gpu.jsonl"):
    with open(os.path.join(RESULTS, name)) as f:
      for line in f:
        run = json.loads(line)
        if run["dataset"] == dataset and sources.get(run["input"], name) == name:
          runs.append(run)
  return runs


def best_per_seed(runs: list[dict], input_name: str) -> dict[int, dict]:
  """seed -> the run of `input_name` whose validation Recall@20 is best (the sweep's choice)."""
  best: dict[int, dict] = {}
  for run in runs:
    if run["input"] == input_name:
      seed = run["seed"]
      if seed not in best or run["valid/recall@20"] > best[seed]["valid/recall@20"]:
        best[seed] = run
  return best


_COLUMNS = ("valid/recall@20",) + tuple(
  f"{split}/{metric}" for split in ("test", "test_short") for metric in _METRICS
)


def row(chosen: list[dict]) -> str:
  return " | ".join(
    f"{np.mean([r[c] for r in chosen]):.4f}±{np.std([r[c] for r in chosen]):.4f}" for c in _COLUMNS
  )


def margin(chosen: list[dict], against: list[dict], column: str) -> str:
  """mean(chosen) - mean(against) in `column`, also in pooled standard deviations."""
  a, b = [r[column] for r in chosen], [r[column] for r in against]
  pooled = np.sqrt((np.var(a) + np.var(b)) / 2)
  diff = np.mean(a) - np.mean(b)
  return f"{diff:+.4f} ({diff / pooled:+.1f} pooled std)" if pooled > 0 else f"{diff:+.4f}"


def main(argv):
  del argv
  sources = dict(s.split(":", 1) for s in _SOURCES.value)
  runs = load_runs(_DATASET.value, sources)
  per_input = {name: best_per_seed(runs, name) for name in _CANDIDATES.value}
  missing = [name for name, best in per_input.items() if not best]
  if missing:
    raise app.UsageError(f"no {_DATASET.value} runs of {', '.join(missing)} in {RESULTS}")
  seeds = sorted(set.intersection(*(set(b) for b in per_input.values())))
  if not seeds:
    raise app.UsageError(
      f"the candidates' runs share no seed: { {n: sorted(b) for n, b in per_input.items()} }"
    )
  print(
    f"{_DATASET.value}, seeds {seeds}; valid R@20 | test R@20 | N@20 | "
    "short-history test R@20 | N@20"
  )
  width = max(len(n) for n in per_input) + 1
  for name, best in per_input.items():
    print(f"  {name:<{width}} {row([best[s] for s in seeds])}")
  picks = {s: max(per_input, key=lambda n, s=s: per_input[n][s]["valid/recall@20"]) for s in seeds}
  selected = [per_input[picks[s]][s] for s in seeds]
  print(f"  {'selected':<{width}} {row(selected)}")
  print("  chosen per seed: " + ", ".join(f"{s}: {picks[s]}" for s in seeds))
  for metric in _METRICS:
    column = f"test/{metric}"
    best_name = max(per_input, key=lambda n: np.mean([per_input[n][s][column] for s in seeds]))
    best = [per_input[best_name][s] for s in seeds]
    print(
      f"  selected - best single input on {column} ({best_name}): " + margin(selected, best, column)
    )


if __name__ == "__main__":
  app.run(main)
