"""Both propagation kernels against dense NumPy and against jraph, forward and backward."""

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import numpy_reference as ref
import pytest

from alignrec_jax import graph as graph_lib
from alignrec_jax import propagation
from alignrec_jax.data.dataset import Interactions

PAIRS = np.array([(0, 0), (0, 1), (1, 1), (2, 3), (3, 0), (3, 2), (3, 3), (1, 4)], np.int32)
U, I = 5, 6


def _user_item_graph():
  return graph_lib.user_item_graph(Interactions(PAIRS[:, 0], PAIRS[:, 1]), num_users=U, num_items=I)


def _adjacency():
  """A_hat, square and symmetric: (graph, shape)."""
  return _user_item_graph(), (U + I, U + I)


def _nonsymmetric():
  """The item kNN graph S, square but not symmetric."""
  feats = np.random.default_rng(3).normal(size=(9, 4)).astype(np.float32)
  return graph_lib.knn_graph(feats, k=3), (9, 9)


def _user_rows():
  """R_hat, rectangular [U, I]: senders are items, receivers users."""
  return graph_lib.user_rows(_user_item_graph(), num_users=U), (U, I)


@pytest.mark.parametrize("kernel", propagation.KERNELS)
@pytest.mark.parametrize("make", [_adjacency, _nonsymmetric, _user_rows])
def test_propagate_forward_and_backward_match_dense(kernel, make):
  graph, shape = make()
  dense = ref.dense(graph, shape)
  op = propagation.SparseOperator.from_graph(graph, shape=shape, kernel=kernel)
  x = np.random.default_rng(0).normal(size=(shape[1], 3)).astype(np.float32)
  cot = np.random.default_rng(1).normal(size=(shape[0], 3)).astype(np.float32)
  np.testing.assert_allclose(propagation.propagate(op, jnp.asarray(x)), dense @ x, atol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(propagation.propagate(op, v) * cot))(jnp.asarray(x))
  # d/dx sum(A x * c) = A^T c: the kNN graph is not symmetric (and R_hat not square), so this
  # checks the transpose.
  np.testing.assert_allclose(grad, dense.T @ cot, atol=1e-6)


def test_operator_keeps_its_graph_and_kernel():
  graph, shape = _adjacency()
  for kernel in propagation.KERNELS:
    op = propagation.SparseOperator.from_graph(graph, kernel=kernel)
    assert op.kernel == kernel and op.shape == shape  # default shape: square over the nodes
    assert (op.csr is None) == (kernel == "segment_sum")
    assert isinstance(op.graph, jraph.GraphsTuple)
    for name in ("edges", "senders", "receivers"):
      np.testing.assert_array_equal(getattr(op.graph, name), getattr(graph, name))
  assert propagation.default_kernel() in propagation.KERNELS
  assert propagation.SparseOperator.from_graph(graph).kernel == propagation.default_kernel()


def test_from_graph_rejects_an_unknown_kernel_and_unsorted_edges():
  graph, _ = _adjacency()
  with pytest.raises(ValueError, match="unknown propagation kernel"):
    propagation.SparseOperator.from_graph(graph, kernel="dense")
  reversed_graph = graph._replace(
    edges=graph.edges[::-1], senders=graph.senders[::-1], receivers=graph.receivers[::-1]
  )
  with pytest.raises(ValueError, match="sorted by receiver"):
    propagation.SparseOperator.from_graph(reversed_graph, kernel="segment_sum")


def _jraph_propagation(graph: jraph.GraphsTuple, x: jax.Array) -> jax.Array:
  """One message-passing step of a jraph GraphNetwork: messages w * x[sender], summed."""
  network = jraph.GraphNetwork(
    update_edge_fn=lambda edges, sent, received, globals_: edges[:, None] * sent,
    update_node_fn=lambda nodes, sent, received, globals_: received,
  )
  return network(graph._replace(nodes=x)).nodes


@pytest.mark.parametrize("kernel", propagation.KERNELS)
@pytest.mark.parametrize("make", [_adjacency, _nonsymmetric])
def test_a_jraph_graph_network_on_the_same_graph_agrees(kernel, make):
  graph, shape = make()
  op = propagation.SparseOperator.from_graph(graph, kernel=kernel)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(shape[1], 5)), jnp.float32)
  cot = jnp.asarray(np.random.default_rng(4).normal(size=(shape[0], 5)), jnp.float32)
  ours = propagation.propagate(op, x)
  # The host graph as graph.py returns it, and the operator's device copy, give the same.
  for g in (graph, op.graph):
    np.testing.assert_allclose(_jraph_propagation(g, x), ours, atol=1e-6)
  grad_ours = jax.grad(lambda v: jnp.sum(propagation.propagate(op, v) * cot))(x)
  grad_jraph = jax.grad(lambda v: jnp.sum(_jraph_propagation(op.graph, v) * cot))(x)
  np.testing.assert_allclose(grad_ours, grad_jraph, atol=1e-6)
  # Against an independent jraph segment sum, too (not the GraphNetwork's default plumbing).
  messages = op.graph.edges[:, None] * x[op.graph.senders]
  np.testing.assert_allclose(
    jraph.segment_sum(messages, op.graph.receivers, num_segments=shape[0]), ours, atol=1e-6
  )


def test_lightgcn_mean_of_layers():
  graph, shape = _adjacency()
  dense = ref.dense(graph, shape)
  x0 = np.random.default_rng(0).normal(size=(11, 4)).astype(np.float32)
  expected = (x0 + dense @ x0 + dense @ dense @ x0) / 3
  for kernel in propagation.KERNELS:
    op = propagation.SparseOperator.from_graph(graph, kernel=kernel)
    got = propagation.lightgcn(op, jnp.asarray(x0), num_layers=2)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_kernels_agree_on_a_larger_graph():
  rng = np.random.default_rng(5)
  users = rng.integers(0, 300, 4000).astype(np.int32)
  items = rng.integers(0, 200, 4000).astype(np.int32)
  keep = np.unique(users.astype(np.int64) * 200 + items, return_index=True)[1]
  graph = graph_lib.user_item_graph(
    Interactions(users[keep], items[keep]), num_users=300, num_items=200
  )
  x = jnp.asarray(rng.normal(size=(500, 64)), jnp.float32)
  outs = []
  for kernel in propagation.KERNELS:
    op = propagation.SparseOperator.from_graph(graph, kernel=kernel)
    loss = lambda v, op=op: jnp.sum(jnp.sin(propagation.lightgcn(op, v, num_layers=2)))  # noqa: E731
    outs.append(jax.grad(loss)(x))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU lowering")
def test_csr_kernel_lowers_to_the_fast_cpu_custom_call():
  # The fast CPU kernel exists only for float32, 2-D, int32 indices; anything else silently
  # falls back to a slow path. Guard against that regression.
  graph, _ = _adjacency()
  op = propagation.SparseOperator.from_graph(graph, kernel="csr")
  fn = jax.jit(jax.grad(lambda o, v: jnp.sum(propagation.propagate(o, v) ** 2), argnums=1))
  text = fn.lower(op, jnp.ones((11, 8), jnp.float32)).compile().as_text()
  assert text.count("cpu_csr_sparse_dense_ffi") >= 2  # forward and the A^T backward


def test_rejects_non_float32():
  graph, _ = _adjacency()
  op = propagation.SparseOperator.from_graph(graph, kernel="csr")
  with pytest.raises(TypeError, match="float32"):
    propagation.propagate(op, jnp.ones((11, 2), jnp.int32))


@pytest.mark.parametrize("kernel", propagation.KERNELS)
def test_bipartite_operator_built_on_device_equals_the_host_graph(kernel):
  """FREEDOM's per-epoch graph, built inside jit, is `graph.user_item_graph` of its edges."""
  rng = np.random.default_rng(3)
  pairs = np.unique(np.stack([rng.integers(0, 7, 40), rng.integers(0, 9, 40)], 1), axis=0)
  train = Interactions(pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32))
  host = graph_lib.user_item_graph(train, num_users=7, num_items=9)
  build = jax.jit(
    lambda u, i: propagation.bipartite_operator(u, i, num_users=7, num_items=9, kernel=kernel)
  )
  op = build(jnp.asarray(train.users), jnp.asarray(train.items))
  assert op.kernel == kernel
  np.testing.assert_allclose(ref.dense(op.graph), ref.dense(host), rtol=1e-6)
  x = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  np.testing.assert_allclose(propagation.propagate(op, x), ref.dense(host) @ x, atol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(propagation.propagate(op, x) ** 2))(x)
  np.testing.assert_allclose(grad, 2 * ref.dense(host).T @ (ref.dense(host) @ x), atol=1e-5)
