"""One stage-2 run, or its result read back: how every experiment of many runs trains stage 2.

A run lives in its own workdir. The training loop writes WORKDIR/summary.json atomically when,
and only when, the run has finished (stopped early or reached its last epoch), with the config
it ran. `stage2` reads that summary back when it is there for the same config, and otherwise
trains (resuming from the run's checkpoints), so an experiment can be stopped and started again
and finished runs are never redone. `stage2_in_subprocess` does the same in a fresh process
whose output goes to WORKDIR/log.txt, for several runs at once.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import ml_collections

from alignrec_jax.training import loop, reporting
from alignrec_jax.training import stage2 as stage2_lib


def finished(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """The summary of the run in `workdir` if it finished with this very config, else None."""
  summary = loop.read_summary(workdir)
  if summary is None or not loop.same_config(
    summary.get("config", {}), json.loads(config.to_json()), stage2_lib.ADDED_FIELDS
  ):
    return None
  return summary


def stage2(
  config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> dict[str, Any]:
  """The summary of stage 2 with `config` in `workdir`: read back if finished, else trained
  (`allow_config_change`: see `loop.train`)."""
  summary = finished(config, workdir)
  if summary is not None:
    splits = {
      k: v for k, v in summary.items() if k in ("valid", "test", "valid_short", "test_short")
    }
    reporting.log(
      f"stage 2 in {workdir} has finished already ({summary['epochs_run']} epochs); "
      f"metrics of its best epoch, {summary['best_epoch']}:\n"
      + reporting.summary_table(splits, ks=tuple(config.eval.ks))
    )
    return summary
  return stage2_lib.train_and_evaluate(config, workdir, allow_config_change=allow_config_change)


def stage2_in_subprocess(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`stage2` for a worker process (see `experiments.sweep`): its output goes to WORKDIR/log.txt.

  The worker's stdout and stderr (file descriptors 1 and 2, so that what XLA and absl write
  goes there too) are appended to the log file; the summary is returned to the caller.
  """
  os.makedirs(workdir, exist_ok=True)
  log = os.open(os.path.join(workdir, "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  sys.stdout.flush()
  sys.stderr.flush()
  os.dup2(log, 1)
  os.dup2(log, 2)
  os.close(log)
  reporting.show_progress()
  return stage2(config, workdir)
