r"""AlignRec's ablations in one command: the full model and each part taken out, over seeds.

  python -m launch.ablate --config=configs/ml100k.py --workdir=runs/ml100k_ablation \
      --seeds=999,1000,1001 --parallel=2

Variants (`--variants`, default all): full, no_cca (content-category alignment off), no_uia
(user-item alignment off), no_sim (similarity term off), frozen (the item features frozen; or
fine_tuned, where the config freezes them), raw (stage 2 on the raw features, no stage 1).
Stage 1 trains once in WORKDIR/stage1 (or --stage1_features=FILE); each run trains in
WORKDIR/runs/INPUT/SETTING/seed_N in a process of its own, resumable, read back when finished.
Prints the tables (all users @10 and @20; the shortest-history users; the authors' cold-user
rule, users with fewer than 4 training interactions, with its size) and writes
WORKDIR/ablation.json and WORKDIR/ablation.md.
"""

from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.experiments import ablation
from alignrec_jax.training import reporting
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The ablation's folder.", required=True)
_VARIANTS = flags.DEFINE_list("variants", None, "Variants to run (default: all; see above).")
_SEEDS = flags.DEFINE_list("seeds", ["999", "1000", "1001"], "Seeds.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once.")
_STAGE1_FEATURES = flags.DEFINE_string(
  "stage1_features", None, "A stage-1 feature file to use instead of training stage 1."
)
_SPARSE_BELOW = flags.DEFINE_integer(
  "sparse_below",
  ablation.SPARSE_BELOW,
  "The cold-user cohort: users with fewer than this many training interactions.",
)


def main(argv):
  del argv
  reporting.show_progress()
  result = ablation.run_ablation(
    _CONFIG.value,
    _WORKDIR.value,
    [int(s) for s in _SEEDS.value],
    keys=_VARIANTS.value,
    stage1_features=_STAGE1_FEATURES.value,
    parallel=_PARALLEL.value,
    sparse_below=_SPARSE_BELOW.value,
  )
  print(ablation.format_markdown(result))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
