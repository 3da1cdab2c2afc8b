r"""Runs one config over several seeds; prints mean and standard deviation per epoch and at best.

  python -m launch.seeds --config=configs/synthetic_baby.py --workdir=runs/parity \
      --config.train.max_epochs=3 --seeds=999,1000,1001 --reference=synthetic-baby

Each seed trains in WORKDIR/seed_N (resumable as usual; a finished one is read back).
`--reference` names a table of the authors' numbers (../shared/data/README.md) to print beside
ours with the relative difference. The result is also written to WORKDIR/seeds.json.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from alignrec_jax.experiments import seeds
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "One sub-folder per seed.", required=True)
_SEEDS = flags.DEFINE_list("seeds", ["999", "1000", "1001"], "Seeds to run.")
_REFERENCE = flags.DEFINE_enum(
  "reference", None, list(seeds.REFERENCE), "Authors' numbers to compare with."
)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  results = seeds.run_seeds(_CONFIG.value, _WORKDIR.value, [int(s) for s in _SEEDS.value])
  for r in results:
    print(
      f"seed {r['seed']}: best epoch {r['summary']['best_epoch']} of "
      f"{r['summary']['epochs_run']}, test recall@20 {r['summary']['test']['recall@20']:.4f}"
    )
  print()
  print(seeds.format_table(results, reference=_REFERENCE.value))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
