r"""Stage-2 speed at Amazon-Baby scale: set-up, compile, epoch, evaluation, memory, FLOP floor.

  python -m benchmarks.bench_train                      # configs/baby_graph.py, this machine
  python -m benchmarks.bench_train --config=configs/sports_graph.py --timed_epochs=2

Baby scale: 19,445 users, 7,050 items, 118,551 training interactions (the real Amazon Baby
graph), 768-d random features, batch 2048, so 58 steps an epoch. Timings are medians over
`timed_epochs` epochs after one warm-up epoch (which includes compilation), each ended by
`block_until_ready`. The step's FLOPs and bytes come from XLA's cost analysis of one compiled
step; `--output` appends the result as one JSON line.
"""

import math
import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.evaluation import evaluate
from alignrec_jax.training import reporting, stage2, stage2_setup
from benchmarks import machine, scale_data, timing

_CONFIG = config_flags.DEFINE_config_file("config", "configs/baby_graph.py", "Config.")
_EPOCHS = flags.DEFINE_integer("timed_epochs", 3, "Epochs timed after the warm-up epoch.")
_EVALS = flags.DEFINE_integer("timed_evals", 5, "Evaluations timed after the warm-up one.")
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/alignrec_bench", "Scratch (synthetic data).")
_SHAPE = scale_data.define_shape_flag()
_PROGRESS = flags.DEFINE_bool(
  "progress", True, "Time the epoch with its progress callback, as training runs it."
)


def _timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def main(argv):
  del argv
  config = _CONFIG.value
  scale_data.use_shape(config, _SHAPE.value, _WORKDIR.value)
  result = {
    "config": config.data.name,
    "model": config.model.name,
    "progress": _PROGRESS.value,
    **machine.describe(),
  }

  start = time.perf_counter()
  exp = stage2_setup.build_experiment(config, _WORKDIR.value)
  result["setup_seconds"] = time.perf_counter() - start
  result["setup_parts"] = exp.setup_seconds
  result["peak_rss_gib_after_setup"] = machine.peak_rss_gib()
  dataset = exp.dataset
  num_train = len(dataset.train)
  steps = math.ceil(num_train / config.train.batch_size)
  result.update(
    num_users=dataset.num_users,
    num_items=dataset.num_items,
    num_train=num_train,
    steps_per_epoch=steps,
    feature_dim=int(exp.train_data.features.shape[1]) if exp.train_data.features is not None else 0,
    kernel=exp.train_data.graphs.user_item.kernel,
    num_devices=exp.parallel.num_devices,
    shard_tables=config.parallel.shard_tables,
    batch_size=config.train.batch_size,
    in_batch_groups=config.train.in_batch_groups,
  )

  recommender = stage2.build_recommender(config, exp)
  state = recommender.init_state(jax.random.key(0), exp.train_data)
  progress = None
  if _PROGRESS.value:
    progress = reporting.EpochProgress(
      "bench", steps=steps, examples_per_step=config.train.batch_size
    )
  epoch_fn = recommender.make_train_epoch(progress)
  key = jax.random.key(1)
  start = time.perf_counter()
  compiled = epoch_fn.lower(state, exp.train_data, key).compile()
  result["compile_seconds"] = time.perf_counter() - start
  result["peak_rss_gib_after_compile"] = machine.peak_rss_gib()

  (state, _), result["warmup_epoch_seconds"] = _timed(compiled, state, exp.train_data, key)
  state, epoch_times = timing.timed_epochs(compiled, state, exp.train_data, epochs=_EPOCHS.value)
  result["epoch_seconds_median"] = statistics.median(epoch_times)
  result["epoch_seconds_all"] = epoch_times
  result["peak_rss_gib_after_training"] = machine.peak_rss_gib()

  embed = recommender.make_embed()
  ks = tuple(config.eval.ks)

  def full_eval(params):
    return evaluate(*embed(params, exp.train_data), exp.eval_data, ks=ks)

  _, result["eval_first_call_seconds"] = _timed(full_eval, state.params)
  eval_times = [_timed(full_eval, state.params)[1] for _ in range(_EVALS.value)]
  result["eval_seconds_median"] = statistics.median(eval_times)

  flops, bytes_accessed = timing.step_cost(recommender, exp, state)
  step_seconds = result["epoch_seconds_median"] / steps
  result.update(
    step_gflop=flops / 1e9,
    step_gbytes=bytes_accessed / 1e9,
    step_seconds=step_seconds,
    achieved_gflops=flops / 1e9 / step_seconds,
  )
  result["peak_rss_gib"] = machine.peak_rss_gib()

  machine.report(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
