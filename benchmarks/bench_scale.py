r"""The scale suite: stage 2 at the shapes of Amazon Baby, Sports, Electronics and 10x Electronics.

  for p in baby sports electronics; do
    python -m benchmarks.bench_scale --preset=$p --output=benchmarks/results/scale_cpu.jsonl
  done
  python -m benchmarks.bench_scale --fit=benchmarks/results/scale_cpu.jsonl   # the table and
                                                                                # growth exponent

One preset a process (so that the peak memory is the preset's own), on `scale_data.py`'s random
data of the preset's shape, reference semantics (`configs/default.py`: batch 2,048, 768-d
features fine-tuned, k = 10), the backend's default kernel. Measured: writing the data (not
counted in set-up), set-up (load, graphs with the exact kNN graph, sampler and evaluation
index), the compile of the epoch program, the step (median of `repeats` calls of a program of
`max_steps` steps, after a warm-up call), the epoch (the step times the epoch's steps, said to be
extrapolated when the epoch has more steps than were timed), one full evaluation (after a
warm-up one; `--evaluate=false` skips it), examples a second, peak host memory after each
phase and the device's peak where the backend reports one.

`--fit` reads the JSON lines of one machine and fits epoch seconds = a x (training pairs)^b by
least squares in log space: b is the growth exponent of the epoch in interactions.
"""

import json
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.evaluation import evaluate
from alignrec_jax.training import stage2, stage2_setup
from alignrec_jax.training.epoch import make_epoch
from benchmarks import machine, scale_data

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command line's flags, defined only when run as a script: the tests import this module
  beside the launchers, whose flags (--config, --workdir) would clash in absl's one registry."""
  config_flags.DEFINE_config_file("config", "configs/default.py", "Settings (not data).")
  flags.DEFINE_enum("preset", "baby", list(scale_data.PRESETS), "The catalogue's shape.")
  flags.DEFINE_integer("max_steps", 60, "Steps in the timed program (at most an epoch).")
  flags.DEFINE_integer("repeats", 3, "Timed calls after the warm-up.")
  flags.DEFINE_bool("evaluate", True, "Time one full evaluation.")
  flags.DEFINE_string("workdir", "/tmp/alignrec_bench", "Where the data is written.")
  flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")
  flags.DEFINE_string("fit", "", "Print the table and growth exponent of this JSONL file.")


def _timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def _device_peak_gib() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**30


def measure(config, preset: str, workdir: str) -> dict:
  """Every number of the module docstring for one preset."""
  result = {"benchmark": "scale", "preset": preset, **machine.describe()}
  start = time.perf_counter()
  scale_data.use_shape(config, preset, workdir)
  result["data_seconds"] = time.perf_counter() - start

  start = time.perf_counter()
  exp = stage2_setup.build_experiment(config, workdir)
  result["setup_seconds"] = time.perf_counter() - start
  result["setup_parts"] = exp.setup_seconds
  result["peak_rss_gib_after_setup"] = machine.peak_rss_gib()
  rec = stage2.build_recommender(config, exp)
  epoch_steps = rec.steps_per_epoch
  steps = min(FLAGS.max_steps, epoch_steps)
  result.update(
    num_users=exp.dataset.num_users,
    num_items=exp.dataset.num_items,
    num_train=len(exp.dataset.train),
    batch_size=rec.batch_size,
    learning_rate=config.optim.lr,
    in_batch_groups=config.train.in_batch_groups,
    num_devices=exp.parallel.num_devices,
    shard_tables=config.parallel.shard_tables,
    trainable_features=rec.trainable_features,
    kernel=exp.train_data.graphs.user_item.kernel,
    steps_per_epoch=epoch_steps,
    steps_timed=steps,
    epoch_extrapolated=steps < epoch_steps,
  )

  state = rec.init_state(jax.random.key(0), exp.train_data)
  # The epoch's program over the first `steps` batches' worth of rows: the same step, so the
  # same time a step; only the scan is shorter.
  program = make_epoch(
    rec.train_step,
    num_examples=min(steps * rec.batch_size, rec.num_examples),
    batch_size=rec.batch_size,
    parallel=rec.parallel,
    prepare=rec.prepare_epoch,
  )
  key = jax.random.key(1)
  start = time.perf_counter()
  compiled = program.lower(state, exp.train_data, key).compile()
  result["compile_seconds"] = time.perf_counter() - start
  (state, _), result["warmup_seconds"] = _timed(compiled, state, exp.train_data, key)
  times = []
  for r in range(FLAGS.repeats):
    (state, _), seconds = _timed(compiled, state, exp.train_data, jax.random.key(2 + r))
    times.append(seconds / steps)
  step = statistics.median(times)
  result.update(
    step_seconds=step,
    step_seconds_all=times,
    epoch_seconds=step * epoch_steps,
    examples_per_second=rec.batch_size / step,
    peak_rss_gib_after_training=machine.peak_rss_gib(),
  )

  if FLAGS.evaluate:
    embed = rec.make_embed()
    ks = tuple(config.eval.ks)

    def full_eval(params):
      return evaluate(*embed(params, exp.train_data), exp.eval_data, ks=ks)

    _, result["eval_first_call_seconds"] = _timed(full_eval, state.params)
    _, result["eval_seconds"] = _timed(full_eval, state.params)
  result["peak_rss_gib"] = machine.peak_rss_gib()
  result["device_peak_gib"] = _device_peak_gib()
  return result


def growth_exponent(num_train: list[float], epoch_seconds: list[float]) -> float:
  """b of epoch = a x num_train^b, least squares in log space."""
  slope, _ = np.polyfit(np.log(num_train), np.log(epoch_seconds), 1)
  return float(slope)


def fit(path: str) -> None:
  """Prints the suite's table from a JSONL file and the epoch's growth exponent."""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rows = sorted((r for r in rows if r.get("benchmark") == "scale"), key=lambda r: r["num_train"])
  print(
    "| preset | users | items | training pairs | set-up s (graphs) | compile s | step ms | "
    "epoch s | evaluation s | examples/s | peak RSS GiB |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    epoch = f"{r['epoch_seconds']:.1f}" + (" (extrapolated)" if r["epoch_extrapolated"] else "")
    evaluation = f"{r['eval_seconds']:.1f}" if "eval_seconds" in r else "not timed"
    print(
      f"| {r['preset']} | {r['num_users']:,} | {r['num_items']:,} | {r['num_train']:,} | "
      f"{r['setup_seconds']:.1f} ({r['setup_parts']['graphs']:.1f}) | "
      f"{r['compile_seconds']:.1f} | {r['step_seconds'] * 1e3:.1f} | {epoch} | {evaluation} | "
      f"{r['examples_per_second']:,.0f} | {r['peak_rss_gib']:.2f} |"
    )
  if len(rows) >= 2:
    b = growth_exponent([r["num_train"] for r in rows], [r["epoch_seconds"] for r in rows])
    print(f"\nepoch time grows as (training pairs)^{b:.2f} over {len(rows)} presets")


def main(argv):
  del argv
  if FLAGS.fit:
    fit(FLAGS.fit)
    return
  result = measure(FLAGS.config, FLAGS.preset, FLAGS.workdir)
  machine.report(result, FLAGS.output)
  print(
    f"{FLAGS.preset}: step {result['step_seconds'] * 1e3:.1f} ms, epoch "
    f"{result['epoch_seconds']:.1f} s over {result['steps_per_epoch']} steps"
    + (" (extrapolated)" if result["epoch_extrapolated"] else "")
  )


if __name__ == "__main__":
  _define_flags()
  app.run(main)
