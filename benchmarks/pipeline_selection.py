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


def row(chosen: list[dict]) -> str:
  cells = []
  for split in ("test", "test_short"):
    for metric in _METRICS:
      values = [r[f"{split}/{metric}"] for r in chosen]
      cells.append(f"{np.mean(values):.4f}±{np.std(values):.4f}")
  return " | ".join(cells)


def main(argv):
  del argv
  sources = dict(s.split(":", 1) for s in _SOURCES.value)
  runs = load_runs(_DATASET.value, sources)
  per_input = {name: best_per_seed(runs, name) for name in _CANDIDATES.value}
  seeds = sorted(set.intersection(*(set(b) for b in per_input.values())))
  print(f"{_DATASET.value}, seeds {seeds}; test R@20 | N@20 | short-history test R@20 | N@20")
  for name, best in per_input.items():
    print(f"  {name:<10} {row([best[s] for s in seeds])}")
  picks = {s: max(per_input, key=lambda n, s=s: per_input[n][s]["valid/recall@20"]) for s in seeds}
  print(f"  {'selected':<10} {row([per_input[picks[s]][s] for s in seeds])}")
  print("  chosen per seed: " + ", ".join(f"{s}: {picks[s]}" for s in seeds))


if __name__ == "__main__":
  app.run(main)
