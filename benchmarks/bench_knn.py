r"""Item kNN graph at Amazon-Electronics scale: 63,001 items x 768-d, k = 10, no I x I matrix.

  python -m benchmarks.bench_knn [--items=63001 --dim=768 --k=10]
  python -m benchmarks.bench_knn --search=ivf --probes=8,32 [--items=630010]   # faiss
  python -m benchmarks.bench_knn --search=ivf --features=../shared/data/lfm2k/text_feat.npy

The similarity product alone is 2 I^2 D = 6.1 TFLOP. Reports the build time and the extra peak
memory (peak resident memory during the build minus the resident memory before it, with the
features already loaded); targets on the 2-core CPU: under 3 minutes and under 1 GB. With
--search=ivf (`graph.KnnSearch`), one build per --probes value, each with its recall against the
exact search on --recall_sample random items (the share of their k - 1 nearest other items it
found; the exact neighbours of the sample alone cost sample / items of the exact graph).
The features are random clusters (easy for IVF) unless --features names a real [items, dim]
feature file.
"""

import time

import numpy as np
from absl import app, flags

from alignrec_jax import graph as graph_lib
from benchmarks import machine

_ITEMS = flags.DEFINE_integer("items", 63_001, "Items.")
_DIM = flags.DEFINE_integer("dim", 768, "Feature dimension.")
_K = flags.DEFINE_integer("k", 10, "Neighbours.")
_SEARCH = flags.DEFINE_enum("search", "exact", list(graph_lib.KNN_SEARCHES), "The search.")
_PROBES = flags.DEFINE_list("probes", ["32"], "ivf: lists searched a query, one build each.")
_SAMPLE = flags.DEFINE_integer("recall_sample", 2000, "ivf: items whose recall is measured.")
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")
_FEATURES = flags.DEFINE_string("features", "", "A real .npy feature table (sets items, dim).")


def _rss_gib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096 / 2**30


def _features() -> np.ndarray:
  if _FEATURES.value:
    return np.load(_FEATURES.value).astype(np.float32)
  rng = np.random.default_rng(0)
  # Clustered features so that neighbourhoods are meaningful, with a few exact duplicates.
  centers = rng.normal(size=(500, _DIM.value)).astype(np.float32)
  feats = centers[rng.integers(0, 500, _ITEMS.value)]
  feats += 0.5 * rng.normal(size=feats.shape).astype(np.float32)
  feats[1::1000] = feats[0::1000][: feats[1::1000].shape[0]]
  return feats


def _timed_build(feats: np.ndarray, search: graph_lib.KnnSearch) -> tuple[dict, object]:
  before = _rss_gib()
  peak_before = machine.peak_rss_gib()
  start = time.perf_counter()
  knn = graph_lib.knn_graph(feats, k=_K.value, search=search)
  seconds = time.perf_counter() - start
  return {
    "seconds": seconds,
    "extra_peak_gib": max(machine.peak_rss_gib(), peak_before) - before,
  }, knn


def main(argv):
  del argv
  feats = _features()
  items, dim = feats.shape
  graph_lib.knn_graph(feats[:2048], k=_K.value)  # compile outside the timing
  base = {
    "features": _FEATURES.value or "random clusters",
    "items": items,
    "dim": dim,
    "k": _K.value,
    "block_size": graph_lib.default_block_size(items),
    "tflop_exact": 2 * items**2 * dim / 1e12,
    **machine.describe(),
  }
  if _SEARCH.value == "exact":
    timing, knn = _timed_build(feats, graph_lib.KnnSearch())
    machine.report({**base, "search": "exact", "nnz": len(knn.edges), **timing}, _OUTPUT.value)
    return
  sample_size = min(_SAMPLE.value, items)
  sample = np.random.default_rng(1).choice(items, sample_size, replace=False)
  start = time.perf_counter()
  exact, _ = graph_lib.exact_neighbours_of(feats, sample, k=_K.value)
  exact_sample_seconds = time.perf_counter() - start
  for probes in (int(p) for p in _PROBES.value):
    timing, knn = _timed_build(feats, graph_lib.KnnSearch("ivf", probes))
    found = np.asarray(knn.senders).reshape(items, _K.value)[sample]  # sorted by item
    recall = np.mean(
      [len(set(f) & set(e[1:])) / (_K.value - 1) for f, e in zip(found, exact, strict=True)]
    )
    result = {
      **base,
      "search": "ivf",
      "probes": probes,
      "recall_sample": sample_size,
      "recall": float(recall),
      "exact_sample_seconds": exact_sample_seconds,
      **timing,
    }
    machine.report(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
