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

Several processes (hosts) run the same program over one global mesh after
`initialize_distributed`: every process builds the same data (it is deterministic) and hands
its own devices' copies to the global arrays (`replicate`); only process 0 writes the run's
records (`is_primary`), while all take part in checkpoints as orbax requires.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alignrec_jax.errors import BOOL, NONNEGATIVE_INT, ConfigError, check_fields, check_values

AXIS = "data"
FIELDS = ("num_devices", "partition_graphs")


def check_config(config: ml_collections.ConfigDict, *, batch_size: int, path: str) -> None:
  """ConfigError for a bad `parallel` group or a batch the devices cannot share evenly."""
  check_fields(config, FIELDS, path=path)
  check_values(config, {"num_devices": NONNEGATIVE_INT, "partition_graphs": BOOL}, path=path)
  available = jax.device_count()
  count = config.num_devices or available
  if count > available:
    raise ConfigError(
      f"{path}.num_devices: {count} asked, {available} available ({jax.default_backend()})"
    )
  if batch_size % count:
    raise ConfigError(
      f"the batch size {batch_size} does not split evenly across {count} "
      f"devices ({path}.num_devices): choose a multiple of {count}"
    )


@dataclasses.dataclass(frozen=True)
class Parallel:
  """Where a run's arrays live: a mesh over `num_devices` devices, or None for one device."""

  mesh: Mesh | None

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

    def put(x):
      if isinstance(x, jax.core.Tracer):  # traced (e.g. under jax.eval_shape): a constraint
        return jax.lax.with_sharding_constraint(x, sharding)
      if jax.process_count() == 1:
        return jax.device_put(x, sharding)
      return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(put, tree)

  def split_batches(self, tree):
    """Inside jit: `tree`'s [num_batches, B, ...] arrays split along B across the mesh."""
    if self.mesh is None:
      return tree
    sharding = NamedSharding(self.mesh, PartitionSpec(None, AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

  def replicated(self):
    """The replicated sharding (for out_shardings), or None on one device."""
    return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())


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
