"""Sparse message passing: y = A x for a fixed sparse A, and LightGCN's layer mean.

Two kernels compute the same product:
  * "segment_sum": jraph's message passing, `segment_sum(w * x[senders], receivers)`; the
    reference kernel, differentiated by JAX.
  * "csr": a CSR sparse-dense product (on CPU, XLA's `cpu_csr_sparse_dense_ffi` custom call) with
    its own backward, dx = A^T dy, which multiplies by a precomputed CSR of A^T. On this CPU it is
    about 6x faster forward + backward (JAX_NOTES.md).
They agree to float32 rounding (tests check 1e-6); `default_kernel()` picks per backend.

Every array is an argument of the jitted step, never a closure constant (closure constants make
XLA constant-fold the backward and compile for minutes).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import jraph
from jax.experimental import sparse

from alignrec_jax.graph import Csr

Kernel = Literal["csr", "segment_sum"]
KERNELS = ("csr", "segment_sum")


def default_kernel() -> Kernel:
  """The faster kernel on the current backend (see benchmarks/bench_propagation.py)."""
  return "csr" if jax.default_backend() == "cpu" else "segment_sum"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SparseOperator:
  """A fixed sparse matrix A on device, with what each kernel needs to apply it and its VJP.

  The CSR of A doubles as the edge list of message passing: entry (r, c, w) is an edge from
  sender c to receiver r with weight w. `t_*` hold the CSR of A^T for the csr kernel's backward.
  """

  data: jax.Array  # [nnz] float32
  indices: jax.Array  # [nnz] int32 column (sender) ids
  indptr: jax.Array  # [rows + 1] int32
  row_ids: jax.Array  # [nnz] int32 row (receiver) ids, ascending
  t_data: jax.Array
  t_indices: jax.Array
  t_indptr: jax.Array
  shape: tuple[int, int] = dataclasses.field(metadata=dict(static=True))
  kernel: str = dataclasses.field(metadata=dict(static=True), default="csr")

  @classmethod
  def from_csr(cls, matrix: Csr, *, kernel: Kernel | None = None) -> SparseOperator:
    kernel = kernel or default_kernel()
    if kernel not in KERNELS:
      raise ValueError(f"unknown propagation kernel {kernel!r}; expected one of {KERNELS}")
    t = matrix.transpose()
    return cls(data=jnp.asarray(matrix.data), indices=jnp.asarray(matrix.indices),
               indptr=jnp.asarray(matrix.indptr), row_ids=jnp.asarray(matrix.row_ids()),
               t_data=jnp.asarray(t.data), t_indices=jnp.asarray(t.indices),
               t_indptr=jnp.asarray(t.indptr), shape=matrix.shape, kernel=kernel)


def _csr_product(data, indices, indptr, shape, x):
  return sparse.BCSR((data, indices, indptr), shape=shape) @ x


@jax.custom_vjp
def _csr_matmul(op: SparseOperator, x: jax.Array) -> jax.Array:
  return _csr_product(op.data, op.indices, op.indptr, op.shape, x)


def _csr_matmul_fwd(op, x):
  return _csr_matmul(op, x), op


def _csr_matmul_bwd(op, dy):
  dx = _csr_product(op.t_data, op.t_indices, op.t_indptr, (op.shape[1], op.shape[0]), dy)
  # The graph is a constant of training: no cotangent for its arrays (None means zero).
  return None, dx


_csr_matmul.defvjp(_csr_matmul_fwd, _csr_matmul_bwd)


def _segment_matmul(op: SparseOperator, x: jax.Array) -> jax.Array:
  messages = op.data[:, None] * x[op.indices]
  return jraph.segment_sum(messages, op.row_ids, num_segments=op.shape[0],
                           indices_are_sorted=True)


def matmul(op: SparseOperator, x: jax.Array) -> jax.Array:
  """A @ x for x [shape[1], dim] float32, with the operator's kernel."""
  if x.dtype != jnp.float32:
    # The fast CPU CSR kernel exists for float32 only; anything else silently takes a slow path.
    raise TypeError(f"sparse propagation expects float32 embeddings, got {x.dtype}")
  if op.kernel == "csr":
    return _csr_matmul(op, x)
  return _segment_matmul(op, x)


def lightgcn(op: SparseOperator, x0: jax.Array, *, num_layers: int) -> jax.Array:
  """LightGCN: X(l+1) = A_hat X(l); returns mean(X0, ..., X_num_layers). [num_nodes, dim]."""
  total = x0
  x = x0
  for _ in range(num_layers):
    x = matmul(op, x)
    total = total + x
  return total / (num_layers + 1)

