"""Known-answer tests of the host-side graphs against dense NumPy."""

import numpy as np
import numpy_reference as ref
import pytest

from alignrec_jax import graph as graph_lib
from alignrec_jax.data.dataset import Interactions


def _interactions(pairs):
  pairs = np.asarray(pairs, np.int32)
  return Interactions(users=pairs[:, 0], items=pairs[:, 1])


def _dense_normalized_adjacency(pairs, num_users, num_items):
  n = num_users + num_items
  a = np.zeros((n, n))
  for u, i in pairs:
    a[u, num_users + i] = a[num_users + i, u] = 1.0
  deg = a.sum(1)
  inv = np.where(deg > 0, deg, np.inf) ** -0.5
  return inv[:, None] * a * inv[None, :]


PAIRS = [(0, 0), (0, 1), (1, 1), (2, 3), (3, 0), (3, 2), (3, 3)]  # user 4 and no item 4: isolated


def test_user_item_graph_matches_dense_normalization():
  graph = graph_lib.user_item_graph(_interactions(PAIRS), num_users=5, num_items=5)
  expected = _dense_normalized_adjacency(PAIRS, 5, 5)
  np.testing.assert_allclose(ref.dense(graph), expected, atol=1e-7)
  assert np.all(np.diff(graph.receivers) >= 0), "edges must be sorted by receiver"
  assert int(graph.n_edge[0]) == 2 * len(PAIRS)
  assert graph.edges.dtype == np.float32
  np.testing.assert_allclose(ref.dense(graph).T, expected, atol=1e-7)  # symmetric: A_hat^T


def test_user_rows_is_r_hat():
  graph = graph_lib.user_item_graph(_interactions(PAIRS), num_users=5, num_items=5)
  block = graph_lib.user_rows(graph, num_users=5)
  # Items renumbered from 0 (senders), users kept (receivers): R_hat, the user rows of A_hat.
  assert np.all(block.receivers < 5) and np.all((0 <= block.senders) & (block.senders < 5))
  assert int(block.n_edge[0]) == len(block.edges) == len(PAIRS)
  assert np.all(np.diff(block.receivers) >= 0), "edges must be sorted by receiver"
  np.testing.assert_allclose(
    ref.dense(block, (5, 5)), _dense_normalized_adjacency(PAIRS, 5, 5)[:5, 5:], atol=1e-7
  )


def _dense_knn(features, k, include_self):
  """The spec's kNN graph, written the slow obvious way."""
  n = features.shape[0]
  norms = np.linalg.norm(features, axis=1, keepdims=True)
  x = features / np.maximum(norms, 1e-12)
  sims = (x @ x.T).astype(np.float64)
  s = np.zeros((n, n))
  for i in range(n):
    candidates = [j for j in range(n) if j != i]
    # Stable sort by descending similarity keeps lower ids first among ties.
    ranked = sorted(candidates, key=lambda j: -sims[i, j])
    chosen = ([i] + ranked[: k - 1]) if include_self else ranked[:k]
    for j in chosen:
      s[i, j] = sims[i, j]
  deg = s.sum(1)
  inv = np.where(deg > 0, np.where(deg > 0, deg, 1.0) ** -0.5, 0.0)
  return inv[:, None] * s * inv[None, :]


@pytest.mark.parametrize("include_self", [True, False])
def test_knn_graph_matches_dense(include_self):
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(13, 6)).astype(np.float32)
  graph = graph_lib.knn_graph(feats, k=4, include_self=include_self, block_size=5)
  np.testing.assert_allclose(ref.dense(graph), _dense_knn(feats, 4, include_self), atol=1e-6)
  # Edge j -> i for each of row i's neighbours j, sorted by (i, j).
  np.testing.assert_array_equal(graph.receivers, np.repeat(np.arange(13), 4))
  assert np.all(np.diff(graph.senders.reshape(13, 4), axis=1) > 0)
  assert (int(graph.n_node[0]), int(graph.n_edge[0])) == (13, 13 * 4)


def test_knn_graph_duplicates_ties_negatives_and_zero_rows():
  feats = np.array(
    [
      [1.0, 0.0],  # 0
      [1.0, 0.0],  # 1 duplicate of 0
      [2.0, 0.0],  # 2 same direction: cosine exactly 1 with 0 and 1
      [-1.0, 0.0],  # 3 opposite: every other cosine negative
      [0.0, 0.0],  # 4 zero row: cosine 0 with everything
      [0.0, 1.0],  # 5
    ],
    np.float32,
  )
  graph = graph_lib.knn_graph(feats, k=3, include_self=True, block_size=4)
  np.testing.assert_array_equal(graph.receivers, np.repeat(np.arange(6), 3))
  neighbours = graph.senders.reshape(6, 3)
  # Self first, then ties by lower id: item 2 keeps itself, then 0 and 1.
  assert sorted(neighbours[2].tolist()) == [0, 1, 2]
  assert sorted(neighbours[1].tolist()) == [0, 1, 2]
  dense = ref.dense(graph)
  assert np.all(np.isfinite(dense)), "no NaN from negative or zero degree rows"
  np.testing.assert_allclose(dense, _dense_knn(feats, 3, True), atol=1e-6)
  # Row 3's kept weights are 1 (self) + two cosines <= 0 (ties by lower id: items 4 and 5 have
  # cosine 0); row 4 (zero row) keeps only zeros: zero degree, an all-zero row.
  assert np.all(dense[4] == 0)


def test_knn_graph_is_independent_of_block_size():
  feats = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
  a = graph_lib.knn_graph(feats, k=5, block_size=7)
  b = graph_lib.knn_graph(feats, k=5, block_size=64)
  np.testing.assert_array_equal(a.senders, b.senders)
  np.testing.assert_array_equal(a.receivers, b.receivers)
  np.testing.assert_allclose(a.edges, b.edges, atol=1e-7)


def test_knn_graph_rejects_bad_k():
  with pytest.raises(ValueError, match="k=6"):
    graph_lib.knn_graph(np.ones((5, 2), np.float32), k=6)


def test_freedom_mixed_knn_graph_matches_dense():
  """MMRec's FREEDOM graph: per modality the top-k of the dense cosine matrix (self included)
  as a binary matrix, D^-1/2 A D^-1/2 over its row sums, mixed by the weights."""
  rng = np.random.default_rng(5)
  image, text = rng.normal(size=(12, 6)), rng.normal(size=(12, 4))
  k = 3

  def binary_normalized(features):
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = unit @ unit.T
    adjacency = np.zeros_like(sims)
    for row in range(len(sims)):
      adjacency[row, np.argsort(-sims[row], kind="stable")[:k]] = 1.0
    inv_sqrt = (adjacency.sum(1) + 1e-7) ** -0.5
    return inv_sqrt[:, None] * adjacency * inv_sqrt[:, None]  # MMRec: row sums on both sides

  expected = 0.1 * binary_normalized(image) + 0.9 * binary_normalized(text)
  graph = graph_lib.mixed_knn_graph([image, text], [0.1, 0.9], k=k)
  np.testing.assert_allclose(ref.dense(graph), expected, rtol=1e-6)
  assert np.all(np.diag(ref.dense(graph)) > 0)  # every item is its own neighbour
  with pytest.raises(ValueError, match="2 modalities but 1 weights"):
    graph_lib.mixed_knn_graph([image, text], [1.0], k=k)


@pytest.mark.parametrize("include_self", [True, False])
def test_ivf_search_probing_every_list_is_the_exact_search(include_self):
  rng = np.random.default_rng(3)
  features = rng.normal(size=(400, 16)).astype(np.float32)  # 10 lists of 40 items
  exact_ids, exact_sims = graph_lib.knn_neighbours(features, k=5, include_self=include_self)
  every_list = graph_lib.KnnSearch("ivf", probes=10)
  ids, sims = graph_lib.knn_neighbours(features, k=5, include_self=include_self, search=every_list)
  np.testing.assert_array_equal(ids, exact_ids)
  np.testing.assert_allclose(sims, exact_sims, atol=1e-5)


def test_ivf_search_with_few_probes_is_a_valid_approximate_graph():
  rng = np.random.default_rng(4)
  # Clustered rows, as real features are: the lists hold most true neighbours.
  centres = rng.normal(size=(8, 16))
  features = (centres[rng.integers(0, 8, 600)] + 0.3 * rng.normal(size=(600, 16))).astype(
    np.float32
  )
  features[7] = 0.0  # a zero row: cosine 0 with everything, still k neighbours
  exact_ids, _ = graph_lib.knn_neighbours(features, k=6, include_self=True)
  ids, sims = graph_lib.knn_neighbours(
    features, k=6, include_self=True, search=graph_lib.KnnSearch("ivf", probes=1)
  )
  assert ids.shape == (600, 6) and ids.dtype == np.int32 and ids.min() >= 0
  np.testing.assert_array_equal(ids[:, 0], np.arange(600))  # the item itself first
  assert sims[7, 0] == 0.0 and np.all(sims[np.arange(600) != 7, 0] == pytest.approx(1.0))
  assert all(len(set(row)) == 6 for row in ids)  # no neighbour twice
  recall = np.mean([len(set(a[1:]) & set(b[1:])) / 5 for a, b in zip(ids, exact_ids, strict=True)])
  assert 0.5 < recall <= 1.0
  graph = graph_lib.knn_graph(
    features, k=6, search=graph_lib.KnnSearch("ivf", probes=1)
  )  # and it makes a graph: k edges a row, sorted by receiver
  assert len(graph.edges) == 600 * 6 and np.all(np.diff(graph.receivers) >= 0)


def test_knn_search_rejects_unknown_methods_and_probes():
  with pytest.raises(ValueError, match="knn search must be one of"):
    graph_lib.KnnSearch("hnsw")
  with pytest.raises(ValueError, match="probes must be >= 1"):
    graph_lib.KnnSearch("ivf", probes=0)


def test_the_config_switches_the_models_item_graph_to_the_ivf_search(tmp_path):
  from alignrec_jax.errors import ConfigError
  from alignrec_jax.training import stage2, stage2_setup
  from configs import test as test_config

  config = test_config.get_config()
  config.data.cache_dir = str(tmp_path / "data")
  config.model.knn_search = "ivf"
  config.model.knn_probes = 2
  exp = stage2_setup.build_experiment(config, str(tmp_path))
  knn = exp.train_data.graphs.item_knn.graph
  k = config.model.alignrec.knn_k
  assert len(knn.edges) == exp.dataset.num_items * k
  config.model.knn_search = "annoy"
  with pytest.raises(ConfigError, match=r"config\.model\.knn_search.*one of"):
    stage2.check_config(config)
