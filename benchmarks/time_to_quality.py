r"""How soon an option reaches the reference's quality: epochs and seconds to a validation target.

  python -m benchmarks.time_to_quality --reference=RUN[,RUN...] --runs=NAME=RUN[,RUN...] ...
      [--within=0.01] [--metric=valid/recall@20] [--output=FILE]

The target is the reference runs' best validation metric (their mean over seeds) less
`within` of it (1% by default). For every run (the reference's too), read from its
`metrics.jsonl`: the first epoch whose validation metric reaches the target, and the training
and evaluation seconds the run had spent by the end of it (the sums of the records'
`train_seconds` and `eval_seconds`; an epoch replayed after an interruption counts once). A run
that never reaches it is reported as such. Seconds are only comparable between runs trained
under the same load: compare the epochs too, and the per-epoch time the benchmarks measure.
"""

from __future__ import annotations

import json
import pathlib
import statistics

from absl import app, flags

from benchmarks import machine

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command line's flags, defined only when run as a script: the tests import this module
  beside other benchmarks whose flags (--output, --runs) would clash in absl's one registry."""
  flags.DEFINE_list("reference", [], "Run folders of the reference semantics.")
  flags.DEFINE_multi_string("runs", [], "NAME=RUN[,RUN...]: an option's run folders.")
  flags.DEFINE_float("within", 0.01, "Relative shortfall allowed from the target.")
  flags.DEFINE_string("metric", "valid/recall@20", "The validation metric.")
  flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")


def read_records(run: str) -> list[dict]:
  """The run's metrics records, one per epoch (the last record of an epoch wins)."""
  by_epoch = {}
  for line in pathlib.Path(run, "metrics.jsonl").read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      by_epoch[record["epoch"]] = record
  return [by_epoch[e] for e in sorted(by_epoch)]


def best(records: list[dict], metric: str) -> float:
  return max(r[metric] for r in records if metric in r)


def reach(records: list[dict], metric: str, target: float) -> dict:
  """The first epoch at or above `target` and the seconds spent by its end (None: never)."""
  seconds = 0.0
  for r in records:
    seconds += r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)
    if r.get(metric, float("-inf")) >= target:
      return {"epoch": r["epoch"], "seconds": seconds}
  return {"epoch": None, "seconds": None, "seconds_run": seconds}


def main(argv):
  del argv
  metric = FLAGS.metric
  groups = {"reference": FLAGS.reference}
  for spec in FLAGS.runs:
    name, _, runs = spec.partition("=")
    groups[name] = runs.split(",")
  records = {name: [read_records(run) for run in runs] for name, runs in groups.items()}
  target = statistics.mean(best(r, metric) for r in records["reference"]) * (1 - FLAGS.within)
  result = {"metric": metric, "within": FLAGS.within, "target": target, **machine.describe()}
  print(f"target: {metric} >= {target:.4f} (the reference's best less {FLAGS.within:.0%})")
  for name, runs in records.items():
    reached = [reach(r, metric, target) for r in runs]
    result[name] = {"runs": groups[name], "reached": reached}
    cells = [
      f"epoch {x['epoch']} at {x['seconds']:.0f} s"
      if x["epoch"] is not None
      else f"never ({x['seconds_run']:.0f} s run)"
      for x in reached
    ]
    print(f"{name}: " + "; ".join(cells))
  machine.append_record(result, FLAGS.output)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
