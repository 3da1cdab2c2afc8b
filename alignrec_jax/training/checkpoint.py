"""Orbax checkpoints of a training run: the train state plus JSON metadata, saved together.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
or kill mid-save leaves the previous checkpoint intact; restore always takes the latest complete
one. Saves are synchronous: the training step donates the state's buffers, so the next epoch has
to wait for the write anyway, and orbax's background writer runs on wall-clock deadlines that a
stalled process (suspended, or starved on a busy machine) can miss, which failed a run here.
The state is restored into an abstract target so optax states come back as the same NamedTuples
(without a target they come back as plain dicts and lists).

Every checkpoint's metadata carries `FORMAT_VERSION`; a checkpoint of another format (written
by an earlier version of this package, whose state had another layout) is refused with one
clear error before its state is read.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from alignrec_jax.errors import WorkdirError

# 2: one train loop for both stages (flax TrainState, one optax chain), grouped configs.
FORMAT_VERSION = 2


class Checkpointer:
  """Saves (state, meta) under `directory/<epoch>`; keeps the newest `keep` checkpoints."""

  def __init__(self, directory: str, *, keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        create=True,
        enable_async_checkpointing=False,
        preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
      ),
    )

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def save(self, epoch: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes the checkpoint of `epoch`; returns when it is complete on disk."""
    meta = {"format": FORMAT_VERSION, **meta}
    self._manager.save(
      epoch,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    )

  def restore_latest(self, target: Any) -> tuple[Any, dict[str, Any]] | None:
    """(state shaped like `target`, meta) of the newest checkpoint, or None if there is none.

    Raises:
      WorkdirError: the checkpoint is of another format version.
    """
    epoch = self.latest_epoch()
    if epoch is None:
      return None
    meta = self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    found = meta.get("format", 1) if isinstance(meta, dict) else 1
    if found != FORMAT_VERSION:
      raise WorkdirError(
        f"{self.directory} holds checkpoints of format {found}, written by an earlier version "
        f"of alignrec_jax; this version writes format {FORMAT_VERSION} and cannot resume "
        "them: use a new --workdir, or delete that folder to start over"
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(
      epoch,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    return restored.state, restored.meta

  def wait(self) -> None:
    """Blocks until every started save is on disk (a no-op while saves are synchronous)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
