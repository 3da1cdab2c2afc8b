r"""Trains AlignRec's stage 2 (or a baseline) and reports MMRec-protocol metrics.

  python -m launch.train --config=configs/default.py --workdir=runs/default
  python -m launch.train --config=configs/lfm2k.py --workdir=runs/lfm2k --config.optim.lr=5e-4

A workdir that holds a run is resumed from its last checkpoint. Metrics go to
WORKDIR/metrics.jsonl (one JSON object per epoch), WORKDIR/summary.json and, with matplotlib
installed, WORKDIR/curves.png.
"""

import json
import logging as std_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

from alignrec_jax import plotting, train

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and metrics go here.",
                               required=True)


class _OwnInfoOnly(std_logging.Filter):
  """Our progress at INFO; other libraries (orbax is chatty) only from WARNING up."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "alignrec_jax" in record.pathname


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  with open(os.path.join(_WORKDIR.value, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  try:
    logging.info("training curves: %s", plotting.plot_run(_WORKDIR.value))
  except ImportError as e:
    logging.info("no training curves: %s", e)


if __name__ == "__main__":
  app.run(main)
