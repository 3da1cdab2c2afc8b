r"""Full-ranking evaluation (validation + test from one scoring pass) at Amazon-Baby scale.

  python -m benchmarks.bench_evaluate [--chunk_sizes=128,256,1024 --methods=count,top_k]

The real Baby graph (19,445 users, 7,050 items, 118,551 training pairs) with random 64-d
embeddings (the cost does not depend on their values). Reports the first call (compilation
included) and the median of `repeats` calls after a warm-up; each call returns host floats, so
it has finished on device when timed.
"""

import statistics
import time

import jax
from absl import app, flags

from alignrec_jax.data import load_mmrec
from alignrec_jax.evaluation.index import DEFAULT_CHUNK_SIZE, make_eval_data
from alignrec_jax.evaluation.ranking import METHODS, evaluate
from benchmarks import machine
from configs import shared_dataset

_DATA = flags.DEFINE_string("data", shared_dataset("baby-graph"), "MMRec folder.")
_CHUNKS = flags.DEFINE_list("chunk_sizes", [str(DEFAULT_CHUNK_SIZE)], "Users per chunk.")
_METHODS = flags.DEFINE_list("methods", list(METHODS), "Ranking methods.")
_DIM = flags.DEFINE_integer("dim", 64, "Embedding dimension.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls after the warm-up.")
_OUTPUT = flags.DEFINE_string("output", "", "Append results as JSON lines to this file.")


def main(argv):
  del argv
  dataset = load_mmrec(_DATA.value)
  print(dataset.summary())
  key_u, key_i = jax.random.split(jax.random.key(0))
  user_emb = jax.random.normal(key_u, (dataset.num_users, _DIM.value))
  item_emb = jax.random.normal(key_i, (dataset.num_items, _DIM.value))
  for chunk_size in map(int, _CHUNKS.value):
    start = time.perf_counter()
    data = jax.device_put(make_eval_data(dataset, chunk_size=chunk_size))
    prepare = time.perf_counter() - start
    for method in _METHODS.value:
      start = time.perf_counter()
      evaluate(user_emb, item_emb, data, method=method)
      first = time.perf_counter() - start
      evaluate(user_emb, item_emb, data, method=method)
      times = []
      for _ in range(_REPEATS.value):
        start = time.perf_counter()
        evaluate(user_emb, item_emb, data, method=method)
        times.append(time.perf_counter() - start)
      result = {
        "data": dataset.name,
        "chunk_size": chunk_size,
        "method": method,
        "prepare_seconds": prepare,
        "first_call_seconds": first,
        "median_seconds": statistics.median(times),
        **machine.describe(),
      }
      machine.report(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
