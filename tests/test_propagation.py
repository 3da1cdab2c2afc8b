"""Both propagation kernels against dense NumPy, forward and backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignrec_jax import graph as graph_lib
from alignrec_jax import propagation
from alignrec_jax.data.dataset import Interactions

PAIRS = np.array([(0, 0), (0, 1), (1, 1), (2, 3), (3, 0), (3, 2), (3, 3), (1, 4)], np.int32)


def _adjacency():
  graph = graph_lib.user_item_graph(Interactions(PAIRS[:, 0], PAIRS[:, 1]), num_users=5,
                                    num_items=6)
  return graph_lib.graph_to_csr(graph)


def _nonsymmetric():
  feats = np.random.default_rng(3).normal(size=(9, 4)).astype(np.float32)
  return graph_lib.knn_graph(feats, k=3)


@pytest.mark.parametrize("kernel", propagation.KERNELS)
@pytest.mark.parametrize("make", [_adjacency, _nonsymmetric])
def test_matmul_forward_and_backward_match_dense(kernel, make):
  matrix = make()
  dense = matrix.todense().astype(np.float64)
  op = propagation.SparseOperator.from_csr(matrix, kernel=kernel)
  x = np.random.default_rng(0).normal(size=(matrix.shape[1], 3)).astype(np.float32)
  cot = np.random.default_rng(1).normal(size=(matrix.shape[0], 3)).astype(np.float32)
  np.testing.assert_allclose(propagation.matmul(op, jnp.asarray(x)), dense @ x, atol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(propagation.matmul(op, v) * cot))(jnp.asarray(x))
  # d/dx sum(A x * c) = A^T c: the kNN graph is not symmetric, so this checks the transpose.
  np.testing.assert_allclose(grad, dense.T @ cot, atol=1e-6)


def test_lightgcn_mean_of_layers():
  matrix = _adjacency()
  dense = matrix.todense().astype(np.float64)
  x0 = np.random.default_rng(0).normal(size=(11, 4)).astype(np.float32)
  expected = (x0 + dense @ x0 + dense @ dense @ x0) / 3
  for kernel in propagation.KERNELS:
    op = propagation.SparseOperator.from_csr(matrix, kernel=kernel)
    got = propagation.lightgcn(op, jnp.asarray(x0), num_layers=2)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_kernels_agree_on_a_larger_graph():
  rng = np.random.default_rng(5)
  users = rng.integers(0, 300, 4000).astype(np.int32)
  items = rng.integers(0, 200, 4000).astype(np.int32)
  keep = np.unique(users.astype(np.int64) * 200 + items, return_index=True)[1]
  graph = graph_lib.user_item_graph(Interactions(users[keep], items[keep]), num_users=300,
                                    num_items=200)
  matrix = graph_lib.graph_to_csr(graph)
  x = jnp.asarray(rng.normal(size=(500, 64)), jnp.float32)
  outs = []
  for kernel in propagation.KERNELS:
    op = propagation.SparseOperator.from_csr(matrix, kernel=kernel)
    loss = lambda v, op=op: jnp.sum(jnp.sin(propagation.lightgcn(op, v, num_layers=2)))  # noqa: E731
    outs.append(jax.grad(loss)(x))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU lowering")
def test_csr_kernel_lowers_to_the_fast_cpu_custom_call():
  # The fast CPU kernel exists only for float32, 2-D, int32 indices; anything else silently
  # falls back to a slow path. Guard against that regression.
  op = propagation.SparseOperator.from_csr(_adjacency(), kernel="csr")
  fn = jax.jit(jax.grad(lambda o, v: jnp.sum(propagation.matmul(o, v) ** 2), argnums=1))
  text = fn.lower(op, jnp.ones((11, 8), jnp.float32)).compile().as_text()
  assert text.count("cpu_csr_sparse_dense_ffi") >= 2  # forward and the A^T backward


def test_rejects_non_float32():
  op = propagation.SparseOperator.from_csr(_adjacency(), kernel="csr")
  with pytest.raises(TypeError, match="float32"):
    propagation.matmul(op, jnp.ones((11, 2), jnp.int32))
