r"""Trains AlignRec's stage 2 (or a baseline) and reports MMRec-protocol metrics.

  python -m launch.train --config=configs/default.py --workdir=runs/default
  python -m launch.train --config=configs/lfm2k.py --workdir=runs/lfm2k --config.optim.lr=5e-4

A workdir that holds a run is resumed from its last checkpoint. Metrics go to
WORKDIR/metrics.jsonl (one JSON object per epoch), WORKDIR/summary.json (when the run has
finished) and, with matplotlib installed, WORKDIR/curves.png. Both stages in one go:
`launch.pipeline`.
"""

from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.training import reporting, stage2
from launch import cli, multihost

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/default.py", "Experiment config.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and metrics go here.", required=True)

_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Resume a run in WORKDIR even though its saved config differs from this one in fields that "
  "change what is computed (the differences are listed).",
)


def main(argv):
  del argv
  multihost.initialize()
  reporting.show_progress()
  stage2.train_and_evaluate(
    _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value
  )


if __name__ == "__main__":
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
