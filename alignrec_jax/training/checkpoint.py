"""Orbax checkpoints of a training run: the train state plus JSON metadata, saved together.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
or kill mid-save leaves the previous checkpoint intact; restore always takes the latest complete
one. Saves are synchronous: the training step donates the state's buffers, so the next epoch has
to wait for the write anyway, and orbax's background writer runs on wall-clock deadlines that a
stalled process (suspended, or starved on a busy machine) can miss, which failed a run here.
The state is restored into an abstract target so optax states come back as the same NamedTuples
(without a target they come back as plain dicts and lists).

Every checkpoint's metadata carries `FORMAT_VERSION`; a checkpoint of another format (written
by an earlier version of this package) is refused with one clear error before its state is
read. A checkpoint that cannot be read (a file lost or cut
short) is moved aside, whole, to CHECKPOINTS.unreadable/, with a warning, and the one before it
is restored: a damaged newest checkpoint costs the epochs since the previous one, not the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from alignrec_jax.errors import WorkdirError

# The workdir format, carried by every checkpoint's metadata and every summary (`record`): 3, a
# run's identity beside its config, one summary shape for every kind of run.
FORMAT_VERSION = 3


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
  """A restore target's leaf: its shape, dtype and sharding; a leaf without a sharding (from
  `jax.eval_shape`) goes to this process's first device, whatever devices saved it."""
  struct = ocp.utils.to_shape_dtype_struct(leaf)
  if struct.sharding is None:
    struct = jax.ShapeDtypeStruct(
      struct.shape, struct.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    )
  return struct


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
      # Named up front, so that a fresh manager can read one item (the metadata, the arrays'
      # shapes) without the other and without orbax's warnings about unknown items.
      item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
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

  def restore_latest(
    self, target: Any, check_meta: Callable[[dict[str, Any]], None] = None
  ) -> tuple[Any, dict[str, Any]] | None:
    """(state shaped like `target`, meta) of the newest readable checkpoint, or None.

    Unreadable checkpoints are moved aside (see the module docstring).

    Args:
      target: a state (or its `jax.eval_shape`) with the structure to restore into.
      check_meta: called with the checkpoint's metadata before its state is read; what it
        raises propagates (e.g. a config that may not resume this checkpoint).

    Raises:
      WorkdirError: the checkpoint is of another format version, or its arrays have other
        shapes than `target`'s (another model size).
    """
    for epoch in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self.read(epoch, target, check_meta=check_meta)
      except WorkdirError:
        raise
      except Exception as e:  # orbax and tensorstore raise many kinds for a damaged checkpoint
        aside = self._move_aside(epoch)
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        logging.warning(
          "the checkpoint of epoch %d in %s cannot be read (%s); moved to %s, trying the one "
          "before it",
          epoch,
          self.directory,
          reason,
          aside,
        )
    return None

  def epochs(self) -> list[int]:
    """The epochs of the checkpoints kept, ascending."""
    return sorted(self._manager.all_steps())

  def read_meta(self, epoch: int) -> dict[str, Any]:
    """The metadata saved with the checkpoint of `epoch` (its state is not read).

    Raises:
      WorkdirError: no such checkpoint, or one of another format.
    """
    if epoch not in self._manager.all_steps():
      raise WorkdirError(
        f"{self.directory} holds no checkpoint of epoch {epoch} (it keeps "
        f"{self.epochs() or 'none'})"
      )
    args = ocp.args.Composite(meta=ocp.args.JsonRestore())
    meta = self._manager.restore(epoch, args=args).meta
    self._check_format(meta)
    return meta

  def read(
    self, epoch: int, target: Any, check_meta: Callable[[dict[str, Any]], None] | None = None
  ) -> tuple[Any, dict[str, Any]]:
    """(state shaped like `target`, meta) of the checkpoint of `epoch`, read only.

    `check_meta` (see `restore_latest`) sees the metadata before the state is read.

    Raises:
      WorkdirError: no such checkpoint, another format, or arrays of other shapes.
    """
    meta = self.read_meta(epoch)
    if check_meta is not None:
      check_meta(meta)
    self._check_shapes(epoch, target)
    abstract = jax.tree.map(_abstract, target)
    restored = self._manager.restore(
      epoch,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    return restored.state, restored.meta

  def _check_format(self, meta: Any) -> None:
    found = meta.get("format", 1) if isinstance(meta, dict) else 1
    if found != FORMAT_VERSION:
      raise WorkdirError(
        f"{self.directory} holds checkpoints of format {found}, written by an earlier "
        f"version of alignrec_jax; this version writes format {FORMAT_VERSION} and cannot "
        "resume them: use a new --workdir, or delete that folder to start over"
      )

  def _check_shapes(self, epoch: int, target: Any) -> None:
    """WorkdirError if the saved arrays' shapes are not the target's (a damaged file is found
    by the restore, not here)."""
    saved = self._manager.item_metadata(epoch)["state"]
    saved = getattr(saved, "tree", saved)
    have = sorted(tuple(getattr(leaf, "shape", ()) or ()) for leaf in jax.tree.leaves(saved))
    want = sorted(tuple(np.shape(leaf)) for leaf in jax.tree.leaves(target))
    if have != want:
      raise WorkdirError(
        f"the checkpoint of epoch {epoch} in {self.directory} holds arrays of other shapes than "
        "this config makes (a changed model size or dataset?): use another --workdir"
      )

  def _move_aside(self, epoch: int) -> str:
    """Moves the checkpoint folder of `epoch` out of orbax's sight; returns where it went."""
    aside = os.path.join(
      self.directory + ".unreadable", f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    os.replace(os.path.join(self.directory, str(epoch)), aside)
    self._manager.reload()
    return aside

  def delete_after(self, epoch: int) -> None:
    """Deletes the checkpoints of epochs after `epoch` (a resumed run redoes those epochs)."""
    for step in self._manager.all_steps():
      if step > epoch:
        self._manager.delete(step)

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.wait()
    self.close()

  def wait(self) -> None:
    """Blocks until every started save is on disk (a no-op while saves are synchronous)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
