r"""Parity with MMRec: our seeds' best-validation metrics against those in MMRec's run logs.

  python -m benchmarks.mmrec_parity --ours=DIR --theirs=LOG[,LOG...]
      [--metrics=valid/recall@20,test/recall@20,test/ndcg@20] [--output=FILE]

DIR is a `launch.seeds` workdir (every `*/summary.json` below it is one seed's run). Each LOG is
a log MMRec writes (`src/log/*.log`, or its console output): every run it finished there is read
from its "best valid result" line and the "test result" line after it, labelled with the seed of
the "Parameters" line that started it (a seed run twice counts once, its last run). Prints each
metric's mean ± sample std on both sides, the relative difference, and the parity rule:
means within 2%, or within one pooled standard deviation where the seeds spread wider than 2%.
"""

from __future__ import annotations

import re

from absl import app, flags

from benchmarks import machine, option_quality

FLAGS = flags.FLAGS

_METRIC = re.compile(r"([a-z]+@\d+): ([0-9.]+)")
_START = re.compile(r"Parameters:\[[^\]]*\]=\((\d+)")


def _define_flags() -> None:
  """Defined only when run as a script (see time_to_quality.py: absl's one flag registry)."""
  flags.DEFINE_string("ours", None, "Our runs (a launch.seeds workdir).", required=True)
  flags.DEFINE_list("theirs", None, "MMRec's log files.", required=True)
  flags.DEFINE_list(
    "metrics", ["valid/recall@20", "test/recall@20", "test/ndcg@20"], "split/metric names."
  )
  flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")


def read_mmrec_log(text: str) -> dict[int, dict[str, dict[str, float]]]:
  """{seed: {"valid": metrics, "test": metrics}} of every run a MMRec log finished (the run's
  seed is the first value of the "=====i/N: Parameters:[...]=(seed, ...)" line that started
  it; MMRec lists the seed first when it is among the hyper-parameters, as run_parity does)."""
  runs, seed, valid = {}, None, None
  for line in text.splitlines():
    start = _START.search(line)
    if start and "=====" in line:
      seed, valid = int(start.group(1)), None
    elif "best valid result:" in line:
      valid = {k: float(v) for k, v in _METRIC.findall(line)}
    elif "test result:" in line and valid is not None and seed is not None:
      runs[seed] = {"valid": valid, "test": {k: float(v) for k, v in _METRIC.findall(line)}}
      valid = None
  return runs


def parity(ours: list[float], theirs: list[float]) -> dict:
  """The comparison of one metric and whether it meets the rule (see the module docstring)."""
  row = option_quality.compare(theirs, ours)  # theirs is the reference here
  relative = row["option_mean"] / row["reference_mean"] - 1
  spread = max(row.get("reference_std", 0.0), row.get("option_std", 0.0)) / row["reference_mean"]
  shift = row["difference_in_pooled_std"]
  holds = abs(relative) <= 0.02 or (spread > 0.02 and shift is not None and abs(shift) <= 1)
  return {**row, "relative_difference": relative, "holds": holds}


def main(argv):
  del argv
  ours = option_quality.read_metrics(FLAGS.ours, FLAGS.metrics)
  runs = {}
  for path in FLAGS.theirs:
    with open(path) as f:
      runs.update(read_mmrec_log(f.read()))
  if not runs:
    raise SystemExit(f"no finished MMRec run in {', '.join(FLAGS.theirs)}")
  result = {"ours": FLAGS.ours, "theirs": FLAGS.theirs, "seeds_theirs": sorted(runs)}
  for metric in FLAGS.metrics:
    split, name = metric.split("/")
    theirs = [runs[seed][split][name] for seed in sorted(runs)]
    row = parity(ours[metric], theirs)
    result[metric] = row
    shift = row["difference_in_pooled_std"]
    print(
      f"{metric}: ours {row['option_mean']:.4f}±{row.get('option_std', 0):.4f} "
      f"({len(ours[metric])} seeds), MMRec {row['reference_mean']:.4f}"
      f"±{row.get('reference_std', 0):.4f} ({len(theirs)} seeds): "
      f"{row['relative_difference']:+.1%}"
      + ("" if shift is None else f", {shift:+.2f} pooled std")
      + f", parity {'holds' if row['holds'] else 'does not hold'}"
    )
  machine.append_record(result, FLAGS.output)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
