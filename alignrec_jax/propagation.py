"""Message passing over a fixed weighted graph: y = A x, and LightGCN's layer mean.

A graph comes from `graph.py` as a `jraph.GraphsTuple` whose `edges` are the weights; entry
(receiver r, sender s, weight w) contributes w x[s] to y[r]. `SparseOperator.from_graph` puts it
on device with what its kernel needs, derived here and nowhere else:

  * "segment_sum": jraph's message passing, `segment_sum(w * x[senders], receivers)`; the
    reference kernel, differentiated by JAX.
  * "csr": a CSR sparse-dense product (on CPU, XLA's `cpu_csr_sparse_dense_ffi` custom call) with
    its own backward, dx = A^T dy, which multiplies by a precomputed CSR of A^T. The graph's
    edges, sorted by receiver, are the CSR's rows as they stand: only the row pointers and the
    transpose are added.
They agree to float32 rounding (tests check 1e-6); `default_kernel()` picks per backend
(benchmarks/README.md has the timings). The operator keeps its GraphsTuple (`op.graph`), so the
same graph can be handed to any jraph model.

Every array is an argument of the jitted step, never a closure constant (closure constants make
XLA constant-fold the backward and compile for minutes).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from jax.experimental import sparse

Kernel = Literal["csr", "segment_sum"]
KERNELS = ("csr", "segment_sum")


def default_kernel() -> Kernel:
  """The faster kernel on the current backend: the CSR custom call on CPU, segment sums else."""
  return "csr" if jax.default_backend() == "cpu" else "segment_sum"


def _row_pointers(rows: np.ndarray, num_rows: int) -> np.ndarray:
  """[num_rows + 1] int32 CSR row pointers of entries sorted by row."""
  return np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_rows))]).astype(np.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CsrBackend:
  """What the csr kernel adds to a graph: A's row pointers and the CSR of A^T (the backward)."""

  indptr: jax.Array  # [rows + 1] int32; A's columns and values are the graph's senders, edges
  t_data: jax.Array  # [nnz] float32
  t_indices: jax.Array  # [nnz] int32
  t_indptr: jax.Array  # [cols + 1] int32


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SparseOperator:
  """A fixed sparse matrix A [rows, cols] on device, as a graph plus its kernel's arrays.

  Attributes:
    graph: the `jraph.GraphsTuple` (device arrays): `edges` [nnz] float32 weights, `senders`
      [nnz] int32 column ids, `receivers` [nnz] int32 row ids, ascending.
    csr: the csr kernel's arrays, or None for the segment_sum kernel.
    shape: (rows, cols): receivers index the output's rows, senders the input's.
  """

  graph: jraph.GraphsTuple
  csr: CsrBackend | None
  shape: tuple[int, int] = dataclasses.field(metadata=dict(static=True))

  @property
  def kernel(self) -> Kernel:
    return "segment_sum" if self.csr is None else "csr"

  @classmethod
  def from_graph(
    cls,
    graph: jraph.GraphsTuple,
    *,
    shape: tuple[int, int] | None = None,
    kernel: Kernel | None = None,
  ) -> SparseOperator:
    """Puts a host GraphsTuple (edges sorted by receiver) on device for `kernel`.

    Args:
      graph: from `graph.py`.
      shape: (rows, cols); default square over the graph's nodes.
      kernel: "csr" or "segment_sum"; default `default_kernel()`.
    """
    kernel = kernel or default_kernel()
    if kernel not in KERNELS:
      raise ValueError(f"unknown propagation kernel {kernel!r}; expected one of {KERNELS}")
    num_nodes = int(np.sum(graph.n_node))
    shape = (num_nodes, num_nodes) if shape is None else (int(shape[0]), int(shape[1]))
    senders, receivers = np.asarray(graph.senders), np.asarray(graph.receivers)
    if np.any(np.diff(receivers) < 0):
      raise ValueError("the graph's edges must be sorted by receiver (graph.py sorts them)")
    csr = None
    if kernel == "csr":
      order = np.lexsort((receivers, senders))  # A^T: rows are the senders
      csr = CsrBackend(
        indptr=jnp.asarray(_row_pointers(receivers, shape[0])),
        t_data=jnp.asarray(np.asarray(graph.edges)[order]),
        t_indices=jnp.asarray(receivers[order]),
        t_indptr=jnp.asarray(_row_pointers(senders, shape[1])),
      )
    return cls(graph=jax.tree.map(jnp.asarray, graph), csr=csr, shape=shape)


def bipartite_operator(
  users: jax.Array, items: jax.Array, *, num_users: int, num_items: int, kernel: Kernel
) -> SparseOperator:
  """Built on device (inside a jitted epoch): the normalised user-item graph of these edges.

  Nodes are users then items, every (u, i) edge both ways with weight 1 / sqrt(d_u d_i), the
  degrees counted over these edges only: `graph.user_item_graph` of a subgraph, for FREEDOM's
  per-epoch pruned graph. The matrix is symmetric, so the csr kernel's A^T is A itself.
  """
  num_nodes = num_users + num_items
  user_degree = jnp.zeros(num_users, jnp.float32).at[users].add(1.0)
  item_degree = jnp.zeros(num_items, jnp.float32).at[items].add(1.0)
  weight = jax.lax.rsqrt(user_degree[users] * item_degree[items])
  senders = jnp.concatenate([users, items + num_users]).astype(jnp.int32)
  receivers = jnp.concatenate([items + num_users, users]).astype(jnp.int32)
  order = jnp.argsort(receivers, stable=True)
  edges, senders, receivers = (
    jnp.concatenate([weight, weight])[order],
    senders[order],
    receivers[order],
  )
  graph = jraph.GraphsTuple(
    nodes=None,
    edges=edges,
    senders=senders,
    receivers=receivers,
    n_node=jnp.array([num_nodes], jnp.int32),
    n_edge=jnp.array([edges.shape[0]], jnp.int32),
    globals=None,
  )
  csr = None
  if kernel == "csr":
    indptr = jnp.searchsorted(receivers, jnp.arange(num_nodes + 1), side="left").astype(jnp.int32)
    csr = CsrBackend(indptr=indptr, t_data=edges, t_indices=senders, t_indptr=indptr)
  return SparseOperator(graph=graph, csr=csr, shape=(num_nodes, num_nodes))


def _csr_product(data, indices, indptr, shape, x):
  return sparse.BCSR((data, indices, indptr), shape=shape) @ x


@jax.custom_vjp
def _csr_propagate(op: SparseOperator, x: jax.Array) -> jax.Array:
  return _csr_product(op.graph.edges, op.graph.senders, op.csr.indptr, op.shape, x)


def _csr_propagate_fwd(op, x):
  return _csr_propagate(op, x), op


def _csr_propagate_bwd(op, dy):
  dx = _csr_product(
    op.csr.t_data, op.csr.t_indices, op.csr.t_indptr, (op.shape[1], op.shape[0]), dy
  )
  # The graph is a constant of training: no cotangent for its arrays (None means zero).
  return None, dx


_csr_propagate.defvjp(_csr_propagate_fwd, _csr_propagate_bwd)


def _segment_propagate(op: SparseOperator, x: jax.Array) -> jax.Array:
  graph = op.graph
  messages = graph.edges[:, None] * x[graph.senders]
  return jraph.segment_sum(
    messages, graph.receivers, num_segments=op.shape[0], indices_are_sorted=True
  )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PartitionedOperator:
  """A fixed sparse matrix A [rows, cols] whose rows are split across a 1-D device mesh.

  Device d holds the edges of receivers d * r .. (d + 1) * r - 1 (r = ceil(rows / devices)),
  padded to the longest device's count with weight-0 edges: `senders`, `receivers` (relative
  to the device's first row) and `weights`, each [devices, max edges] and sharded by their first
  axis. `propagate` then has each device sum its own rows (segment sums over its edges, x
  replicated) and gathers the rows: the propagation's work splits across devices instead of
  every device repeating all of it. Equal to `SparseOperator`'s result to float rounding.
  """

  senders: jax.Array
  receivers: jax.Array
  weights: jax.Array
  shape: tuple[int, int] = dataclasses.field(metadata=dict(static=True))
  mesh: jax.sharding.Mesh = dataclasses.field(metadata=dict(static=True))
  # The run's kernel, for graphs derived from this one (FREEDOM's per-epoch pruned graph, a
  # SparseOperator); the partitioned product itself always sums segments.
  kernel: Kernel = dataclasses.field(default="segment_sum", metadata=dict(static=True))

  @classmethod
  def from_graph(
    cls,
    graph: jraph.GraphsTuple,
    mesh: jax.sharding.Mesh,
    *,
    shape: tuple[int, int] | None = None,
    kernel: Kernel | None = None,
  ) -> PartitionedOperator:
    """The host GraphsTuple (edges sorted by receiver) split by receiver rows over `mesh`;
    `kernel` (default `default_kernel()`) is what derived graphs use."""
    num_nodes = int(np.sum(graph.n_node))
    shape = (num_nodes, num_nodes) if shape is None else (int(shape[0]), int(shape[1]))
    senders, receivers = np.asarray(graph.senders), np.asarray(graph.receivers)
    if np.any(np.diff(receivers) < 0):
      raise ValueError("the graph's edges must be sorted by receiver (graph.py sorts them)")
    devices = mesh.size
    per_device = -(-shape[0] // devices)
    bounds = np.searchsorted(receivers, np.arange(devices + 1) * per_device)
    width = max(int(np.max(np.diff(bounds))), 1)
    # Padding edges: sender 0, the device's first row, weight 0 (they add nothing).
    out_senders = np.zeros((devices, width), np.int32)
    out_receivers = np.zeros((devices, width), np.int32)
    out_weights = np.zeros((devices, width), np.float32)
    for d in range(devices):
      part = slice(bounds[d], bounds[d + 1])
      count = bounds[d + 1] - bounds[d]
      out_senders[d, :count] = senders[part]
      out_receivers[d, :count] = receivers[part] - d * per_device
      out_weights[d, :count] = np.asarray(graph.edges)[part]
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))

    def put(host: np.ndarray) -> jax.Array:  # each process supplies its own devices' rows
      return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return cls(
      senders=put(out_senders),
      receivers=put(out_receivers),
      weights=put(out_weights),
      shape=shape,
      mesh=mesh,
      kernel=kernel or default_kernel(),
    )


def _partitioned_propagate(op: PartitionedOperator, x: jax.Array) -> jax.Array:
  (axis,) = op.mesh.axis_names
  per_device = -(-op.shape[0] // op.mesh.size)
  spec = jax.sharding.PartitionSpec(axis)

  def local(senders, receivers, weights, x):
    messages = weights[0][:, None] * x[senders[0]]
    return jax.ops.segment_sum(
      messages, receivers[0], num_segments=per_device, indices_are_sorted=True
    )

  # x enters replicated; its gradient is each device's share summed across devices, which
  # shard_map's varying-axis tracking inserts (no averaging: JAX_NOTES.md's trap).
  rows = jax.shard_map(
    local,
    mesh=op.mesh,
    in_specs=(spec, spec, spec, jax.sharding.PartitionSpec()),
    out_specs=spec,
  )(op.senders, op.receivers, op.weights, x)
  return rows[: op.shape[0]]


def propagate(op: SparseOperator | PartitionedOperator, x: jax.Array) -> jax.Array:
  """A @ x: each receiver sums its senders' rows of x [cols, dim] weighted by the edges."""
  if x.dtype != jnp.float32:
    # The fast CPU CSR kernel exists for float32 only; anything else silently takes a slow path.
    raise TypeError(f"sparse propagation expects float32 embeddings, got {x.dtype}")
  if isinstance(op, PartitionedOperator):
    return _partitioned_propagate(op, x)
  if op.csr is not None:
    return _csr_propagate(op, x)
  return _segment_propagate(op, x)


def lightgcn(
  op: SparseOperator | PartitionedOperator, x0: jax.Array, *, num_layers: int
) -> jax.Array:
  """LightGCN: X(l+1) = A_hat X(l); returns mean(X0, ..., X_num_layers). [num_nodes, dim]."""
  total = x0
  x = x0
  for _ in range(num_layers):
    x = propagate(op, x)
    total = total + x
  return total / (num_layers + 1)
