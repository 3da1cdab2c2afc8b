"""Data parallelism: the epoch's batches split across devices (and hosts), the rest replicated.

The path current JAX recommends: one jitted program over a 1-D device mesh with the axis
"data". Parameters, optimiser state and the data arrays are replicated on every device; each
step's batch rows (and so its sampled negatives and per-row loss terms) are split along
"data"; XLA's SPMD partitioner inserts the collectives, so gradients are averaged and the
in-batch terms (InfoNCE, similarity preservation) still span the global batch, as the
reference computes them (`train.in_batch_groups` keeps them per device instead). The graphs'
propagation is split by receiver rows (`propagation.PartitionedOperator`, a `shard_map`) and
evaluation by users (`evaluation.ranking`). On one device nothing is added: the single-device
program is unchanged.

With `shard_tables`, stage 2's catalogue tables (the ID embeddings, the fine-tuned feature
table) and their Adam moments are split by rows across the devices instead of replicated, so
each device holds 1 / N of them. Jit boundaries cannot split a dimension unevenly, so those
tables are kept padded with zero rows to a multiple of `TABLE_ROW_QUANTUM` (`pad_tables`) and
the model reads them sliced back (`unpad_tables`): the padding gets zero gradients and stays
zero, and the numbers are those of the unpadded run. The padding does not depend on the
device count, so a run resumes on any mesh whose size divides the quantum.

Several processes (hosts) run the same program over one global mesh after
`initialize_distributed`: every process builds the same data (it is deterministic) and hands
its own devices' copies to the global arrays (`replicate`); only process 0 writes the run's
records (`is_primary`), while all take part in checkpoints as orbax requires.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alignrec_jax import schema
from alignrec_jax.errors import ConfigError

AXIS = "data"

# Sharded tables' rows are padded to a multiple of this, so any mesh whose size divides it (1, 2,
# 4, ..., 1024 devices) splits them evenly, and one checkpoint fits every such mesh.
TABLE_ROW_QUANTUM = 1024


@dataclasses.dataclass(frozen=True)
class Config:
  """The devices a run's epochs and evaluation run on."""

  num_devices: int = schema.field(
    0,
    "devices each step's batch is split across (train.batch_size is the global batch); 0 takes "
    "every device",
    schema.NONNEGATIVE_INT,
    neutral=True,
  )
  partition_graphs: bool = schema.field(
    True,
    "on several devices, each propagates its share of the graphs' rows (False: every device "
    "propagates all of them)",
    schema.BOOL,
    neutral=True,
  )
  shard_tables: bool = schema.field(
    False,
    "split stage 2's ID tables, fine-tuned feature table and their Adam moments by rows across "
    "the devices instead of replicating them (same numbers; a run keeps the setting it started "
    "with)",
    schema.BOOL,
  )


GROUP = schema.group_of(Config)


def check_config(config: ml_collections.ConfigDict, *, batch_size: int, path: str) -> None:
  """ConfigError for a bad `parallel` group or a batch the devices cannot share evenly."""
  schema.check(config, GROUP, path=path)
  available = jax.device_count()
  count = config.num_devices or available
  if count > available:
    raise ConfigError(
      f"{path}.num_devices: {count} asked, {available} available ({jax.default_backend()})"
    )
  if config.shard_tables and TABLE_ROW_QUANTUM % count:
    raise ConfigError(
      f"{path}.shard_tables: the tables' rows are padded to a multiple of {TABLE_ROW_QUANTUM}, "
      f"which {count} devices do not split evenly: choose a device count that divides it"
    )
  if batch_size % count:
    raise ConfigError(
      f"the batch size {batch_size} does not split evenly across {count} "
      f"devices ({path}.num_devices): choose a multiple of {count}"
    )


def padded_rows(rows: int) -> int:
  """`rows` rounded up to a multiple of TABLE_ROW_QUANTUM."""
  return -(-rows // TABLE_ROW_QUANTUM) * TABLE_ROW_QUANTUM


# A parameter's place in its tree, e.g. ("net", "ids", "embedding").
Path = tuple[str, ...]


def _names(key_path) -> Path:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in key_path)


def is_table(key_path, tables: frozenset[Path]) -> bool:
  """Whether a leaf at `key_path` is one of `tables`: its path ends with one of them (so an
  optimiser moment of a table, whose path ends with the table's, is one too)."""
  names = _names(key_path)
  return any(names[len(names) - len(t) :] == t for t in tables if len(t) <= len(names))


def pad_tables(params, tables: frozenset[Path]):
  """`params` with each of `tables` padded with zero rows to `padded_rows`."""

  def pad(key_path, x):
    if not is_table(key_path, tables):
      return x
    return jnp.pad(x, ((0, padded_rows(x.shape[0]) - x.shape[0]), (0, 0)))

  return jax.tree_util.tree_map_with_path(pad, params)


def unpad_tables(params, shapes):
  """`params` cut back to `shapes` (the unpadded parameters' `jax.eval_shape`); the cut's
  gradient is zero on the padding rows."""
  return jax.tree.map(lambda x, s: x if x.shape == s.shape else x[: s.shape[0]], params, shapes)


@dataclasses.dataclass(frozen=True)
class Parallel:
  """Where a run's arrays live: a mesh over `num_devices` devices, or None for one device.

  `tables`: the parameter paths of the (padded) row tables a state splits by rows across the
  mesh (`place_state`; `is_table`); empty: every leaf is replicated.
  """

  mesh: Mesh | None
  tables: frozenset[Path] = frozenset()

  @property
  def num_devices(self) -> int:
    return 1 if self.mesh is None else self.mesh.size

  def replicate(self, tree):
    """`tree`'s arrays copied to every device of the mesh (to the default device without one).

    Each process provides the copies on its own devices, so this works across hosts too (every
    process must pass the same values).
    """
    if self.mesh is None:
      return jax.device_put(tree)
    sharding = NamedSharding(self.mesh, PartitionSpec())
    return jax.tree.map(lambda x: _put(x, sharding), tree)

  def place_state(self, tree):
    """A training state's arrays on the mesh: the `tables` and their moments split by rows,
    everything else replicated. Inside jit (traced) a sharding constraint, which also keeps an
    epoch's output state in its input's layout (else the next epoch would compile again)."""
    if self.mesh is None:
      return jax.device_put(tree)
    replicated = NamedSharding(self.mesh, PartitionSpec())
    by_rows = NamedSharding(self.mesh, PartitionSpec(AXIS, None))

    def place(key_path, x):
      return _put(x, by_rows if is_table(key_path, self.tables) else replicated)

    return jax.tree_util.tree_map_with_path(place, tree)

  def split_batches(self, tree):
    """Inside jit: `tree`'s [num_batches, B, ...] arrays split along B across the mesh."""
    if self.mesh is None:
      return tree
    sharding = NamedSharding(self.mesh, PartitionSpec(None, AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def _put(x, sharding: NamedSharding):
  """`x` with `sharding`: a constraint when traced (in jit, or under jax.eval_shape); across
  processes, each provides its own devices' pieces of the (identical) global value."""
  if isinstance(x, jax.core.Tracer):
    return jax.lax.with_sharding_constraint(x, sharding)
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  value = np.asarray(x)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def make_parallel(config: ml_collections.ConfigDict) -> Parallel:
  """The Parallel of a `parallel` config group: `num_devices` 0 takes every device."""
  count = config.num_devices or jax.device_count()
  if count == 1:
    return Parallel(mesh=None)
  return Parallel(mesh=Mesh(np.array(jax.devices()[:count]), (AXIS,)))


def is_primary() -> bool:
  """Whether this process writes the run's records (process 0; the only one on one host)."""
  return jax.process_index() == 0


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  from_environment: bool = False,
) -> None:
  """Joins a multi-process job (`jax.distributed.initialize`) when one is asked for.

  With all three of coordinator, process count and id, as they say; with `from_environment`,
  as the cluster's environment says where JAX recognises one (SLURM, Open MPI, TPU pods,
  Kubernetes, ...); else this is a single-process run and nothing happens.
  """
  given = [x is not None for x in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise ConfigError("--coordinator_address, --num_processes and --process_id go together")
  if all(given):
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif from_environment:
    jax.distributed.initialize()
