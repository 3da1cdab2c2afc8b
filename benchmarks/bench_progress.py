r"""What the progress lines of long epochs cost: the same epoch with and without its callback.

  python -m benchmarks.bench_progress [--rounds=8] [--config=configs/baby_graph.py]

The stage-2 epoch at Amazon-Baby scale (58 steps) compiled twice in one process, with the
per-step host callback that feeds `reporting.EpochProgress` and without it, then run in
alternation (a round is one epoch of each, their order swapped every round), so the machine's
drift hits both alike. Reports each variant's median epoch and the relative difference.
"""

import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.training import reporting, stage2, stage2_setup
from benchmarks import machine

_CONFIG = config_flags.DEFINE_config_file("config", "configs/baby_graph.py", "Config.")
_ROUNDS = flags.DEFINE_integer("rounds", 8, "Epochs of each variant, alternating.")
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/alignrec_bench", "Scratch (synthetic data).")


def main(argv):
  del argv
  config = _CONFIG.value
  exp = stage2_setup.build_experiment(config, _WORKDIR.value)
  recommender = stage2.build_recommender(config, exp)
  progress = reporting.EpochProgress(
    "bench", steps=recommender.steps_per_epoch, examples_per_step=recommender.batch_size
  )
  epochs = {
    "without": recommender.make_train_epoch(),
    "with": recommender.make_train_epoch(progress),
  }
  states = {name: recommender.init_state(jax.random.key(0), exp.train_data) for name in epochs}
  times = {name: [] for name in epochs}
  for name, epoch in epochs.items():  # compile and warm up
    states[name], _ = jax.block_until_ready(epoch(states[name], exp.train_data, jax.random.key(1)))
  for round_ in range(_ROUNDS.value):
    order = list(epochs) if round_ % 2 == 0 else list(reversed(epochs))
    for name in order:
      progress.start(round_)
      start = time.perf_counter()
      states[name], _ = jax.block_until_ready(
        epochs[name](states[name], exp.train_data, jax.random.key(round_ + 2))
      )
      times[name].append(time.perf_counter() - start)
  medians = {name: statistics.median(t) for name, t in times.items()}
  result = {
    "config": config.data.name,
    **machine.describe(),
    "rounds": _ROUNDS.value,
    "epoch_seconds_median": medians,
    "epoch_seconds_all": times,
    "overhead": medians["with"] / medians["without"] - 1,
  }
  machine.report(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
