r"""An option's quality against the reference semantics: test metrics over seeds, in pooled stds.

  python -m benchmarks.option_quality --reference=DIR --option=NAME=DIR [--option=...]
      [--metrics=test/recall@20,test/ndcg@20] [--output=FILE]

Each DIR is a `launch.seeds` workdir (or any folder of runs): every `*/summary.json` below it is
one seed's finished run. For each metric, the mean and sample standard deviation over seeds,
and the option's difference from the reference in pooled standard deviations
(sqrt((s_ref^2 + s_opt^2) / 2)). An option that changes the semantics is kept when its test
Recall@20 and NDCG@20 are no lower than the reference's by more than one.
"""

from __future__ import annotations

import json
import math
import pathlib
import statistics

from absl import app, flags

from benchmarks import machine

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script (see time_to_quality.py: absl's one flag registry)."""
  flags.DEFINE_string("reference", None, "Runs of the reference semantics.", required=True)
  flags.DEFINE_multi_string("option", [], "NAME=DIR: an option's runs.")
  flags.DEFINE_list("metrics", ["test/recall@20", "test/ndcg@20"], "split/metric names.")
  flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")


def read_metrics(folder: str, metrics: list[str]) -> dict[str, list[float]]:
  """Each metric's values over the finished runs below `folder` (in path order)."""
  summaries = sorted(pathlib.Path(folder).glob("*/summary.json"))
  if not summaries:
    raise SystemExit(f"{folder}: no finished run (no */summary.json)")
  values = {m: [] for m in metrics}
  for path in summaries:
    summary = json.loads(path.read_text())
    for metric in metrics:
      split, name = metric.split("/")
      values[metric].append(summary[split][name])
  return values


def compare(reference: list[float], option: list[float]) -> dict:
  """Means, sample stds and the option's difference in pooled stds (None with < 2 seeds)."""
  mean_ref, mean_opt = statistics.mean(reference), statistics.mean(option)
  result = {"reference_mean": mean_ref, "option_mean": mean_opt, "seeds": len(option)}
  if len(reference) < 2 or len(option) < 2:
    return {**result, "pooled_std": None, "difference_in_pooled_std": None}
  std_ref, std_opt = statistics.stdev(reference), statistics.stdev(option)
  pooled = math.sqrt((std_ref**2 + std_opt**2) / 2)
  return {
    **result,
    "reference_std": std_ref,
    "option_std": std_opt,
    "pooled_std": pooled,
    "difference_in_pooled_std": (mean_opt - mean_ref) / pooled if pooled > 0 else None,
  }


def main(argv):
  del argv
  metrics = FLAGS.metrics
  reference = read_metrics(FLAGS.reference, metrics)
  result = {"reference": FLAGS.reference, "options": {}}
  for spec in FLAGS.option:
    name, _, folder = spec.partition("=")
    option = read_metrics(folder, metrics)
    rows = {m: compare(reference[m], option[m]) for m in metrics}
    result["options"][name] = {"folder": folder, "metrics": rows}
    for metric, row in rows.items():
      shift = row["difference_in_pooled_std"]
      print(
        f"{name} {metric}: {row['option_mean']:.4f} ({row['seeds']} seeds) against "
        f"{row['reference_mean']:.4f}" + ("" if shift is None else f": {shift:+.2f} pooled std")
      )
  machine.append_record(result, FLAGS.output)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
