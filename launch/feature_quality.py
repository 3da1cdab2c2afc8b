r"""The paper's feature-quality checks, raw features against stage-1 features, side by side.

  python -m launch.pipeline --config=configs/ml100k.py --workdir=runs/ml100k        # first
  python -m launch.feature_quality --config=configs/ml100k.py --workdir=runs/ml100k

(a) content-only item-kNN, (b) stage 2 with one modality missing for half the items, (c) the
shortest-history users' metrics; see alignrec_jax/experiments/feature_comparison.py. Trains
stage 2 once on the raw features and twice per removed modality (raw, stage 1), each run in its
own folder under WORKDIR/feature_quality (resumed or reused by a second call). Prints the table
and writes WORKDIR/feature_quality.json.
"""

from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.experiments import feature_comparison
from alignrec_jax.training import reporting
from launch import cli

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/ml100k.py", "The config the pipeline ran with.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The pipeline's workdir.", required=True)
_MISSING_FRACTION = flags.DEFINE_float(
  "missing_fraction", 0.5, "Fraction of items that lose the modality in (b)."
)
_MISSING = flags.DEFINE_list(
  "missing", None, "Stage-1 modalities removed in turn in (b); default: each one."
)


def main(argv):
  del argv
  reporting.show_progress()
  results = feature_comparison.compare(
    _CONFIG.value, _WORKDIR.value, missing_fraction=_MISSING_FRACTION.value, missing=_MISSING.value
  )
  print(feature_comparison.format_table(results))


if __name__ == "__main__":
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
