r"""Item kNN graph at Amazon-Electronics scale: 63,001 items x 768-d, k = 10, no I x I matrix.

  python -m benchmarks.bench_knn [--items=63001 --dim=768 --k=10]

The similarity product alone is 2 I^2 D = 6.1 TFLOP. Reports the build time and the extra peak
memory (peak resident memory during the build minus the resident memory before it, with the
features already loaded); targets on the 2-core CPU: under 3 minutes and under 1 GB.
"""

import time

import numpy as np
from absl import app, flags

from alignrec_jax import graph as graph_lib
from benchmarks import machine

_ITEMS = flags.DEFINE_integer("items", 63_001, "Items.")
_DIM = flags.DEFINE_integer("dim", 768, "Feature dimension.")
_K = flags.DEFINE_integer("k", 10, "Neighbours.")
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")


def _rss_gib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096 / 2**30


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  # Clustered features so that neighbourhoods are meaningful, with a few exact duplicates.
  centers = rng.normal(size=(500, _DIM.value)).astype(np.float32)
  feats = centers[rng.integers(0, 500, _ITEMS.value)]
  feats += 0.5 * rng.normal(size=feats.shape).astype(np.float32)
  feats[1::1000] = feats[0::1000][: feats[1::1000].shape[0]]
  graph_lib.knn_graph(feats[:2048], k=_K.value)  # compile outside the timing
  before = _rss_gib()
  peak_before = machine.peak_rss_gib()
  start = time.perf_counter()
  knn = graph_lib.knn_graph(feats, k=_K.value)
  seconds = time.perf_counter() - start
  result = {
    "items": _ITEMS.value,
    "dim": _DIM.value,
    "k": _K.value,
    "nnz": knn.nnz,
    "block_size": graph_lib.default_block_size(_ITEMS.value),
    "tflop": 2 * _ITEMS.value**2 * _DIM.value / 1e12,
    "seconds": seconds,
    "extra_peak_gib": max(machine.peak_rss_gib(), peak_before) - before,
    **machine.describe(),
  }
  machine.report(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
