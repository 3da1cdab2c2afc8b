r"""Both stages of AlignRec: pre-train the cross-modal encoder, then train stage 2 on its output.

  python -m launch.pipeline --config=configs/ml100k.py --workdir=runs/ml100k
  python -m launch.pipeline --config=configs/lfm2k.py --workdir=runs/lfm2k \
      --config.stage1.train.epochs=40

WORKDIR/stage1 holds stage 1's checkpoints, metrics.jsonl and the item features it writes
(stage1_feat.npy); WORKDIR/stage2 is an ordinary `launch.train` run fed with those features.
Each stage resumes from its checkpoints. A second run reuses finished stage-1 features made
with the same settings (`--redo_stage1` trains stage 1 again); stage 2 starts over whenever
its input features changed.
"""

from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.experiments import pipeline
from alignrec_jax.training import reporting
from launch import cli, multihost

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/ml100k.py", "Experiment config.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Both stages write under this folder.", required=True
)
_REDO_STAGE1 = flags.DEFINE_bool(
  "redo_stage1", False, "Train stage 1 again even if its output is there."
)

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
  pipeline.run_pipeline(
    _CONFIG.value,
    _WORKDIR.value,
    redo_stage1=_REDO_STAGE1.value,
    allow_config_change=_ALLOW_CONFIG_CHANGE.value,
  )


if __name__ == "__main__":
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
