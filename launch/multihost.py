"""The multi-host flags that `launch.train` and `launch.pipeline` share, and joining the job.

Imported by a launcher, this module defines the flags; `initialize()` (first thing in main) joins
the job they describe, or does nothing for a single process.
"""

from absl import flags

from alignrec_jax.training import parallel

_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "Multi-host: host:port of process 0 (with the next two flags)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: the processes in all.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process, 0-based.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "Multi-host: join the job the cluster's environment describes (SLURM, Open MPI, TPU pods, "
  "...) through jax.distributed.initialize().",
)


def initialize() -> None:
  """`parallel.initialize_distributed` with this process's flags."""
  parallel.initialize_distributed(
    _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, from_environment=_DISTRIBUTED.value
  )
