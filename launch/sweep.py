r"""Stage 2 over a grid of feature inputs x hyper-parameters x seeds, selected on validation.

  python -m launch.sweep --config=configs/lfm2k.py --workdir=runs/lfm2k_sweep \
      --inputs=text,audio,raw,stage1 --grid=optim.lr=1e-3,5e-4 \
      --grid=model.alignrec.loss.cl_weight=0.01,0.1 --seeds=999,1000,1001 --parallel=2

Inputs: a stage-1 modality name (its paired raw feature file alone: `config.data.features` and
`config.stage1.data.modalities` pair by position), "raw" (all raw feature files, combined as the
config says), "stage1" (the stage-1 features: WORKDIR/stage1, trained first if needed, or
--stage1_features=FILE). Every run trains in WORKDIR/runs/INPUT/SETTING/seed_N in a process of
its own (its log in log.txt there), with the config given here (--config.* flags included) and
the run's seed, features and grid values. Finished runs are read back, so the command can be
stopped and run again. Prints, per input, the mean ± std over seeds of the test metrics of the
setting with the best validation Recall@20, and writes WORKDIR/sweep.json.
"""

from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.experiments import sweep
from alignrec_jax.experiments.inputs import feature_inputs
from alignrec_jax.training import reporting
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's folder.", required=True)
_INPUTS = flags.DEFINE_list("inputs", ["raw", "stage1"], "Feature inputs (see above).")
_GRID = flags.DEFINE_multi_string(
  "grid",
  ["optim.lr=1e-3,5e-4", "model.alignrec.loss.cl_weight=0.01,0.1"],
  "FIELD=V1,V2,...: one axis of the hyper-parameter grid.",
)
_SEEDS = flags.DEFINE_list("seeds", ["999", "1000", "1001"], "Seeds.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once.")
_TIME_BUDGET = flags.DEFINE_float(
  "time_budget", 0.0, "Seconds after which no new run starts (0: no limit)."
)
_MAX_NEW_RUNS = flags.DEFINE_integer(
  "max_new_runs",
  -1,
  "Start at most this many runs (-1: all; 0: only collect the finished ones into the table).",
)
_VMAP = flags.DEFINE_bool(
  "vmap",
  False,
  "Train each input's runs together in one compiled program (jax.vmap over the runs; the grid "
  "may sweep optim.lr only), instead of one worker process per run.",
)
_STAGE1_FEATURES = flags.DEFINE_string(
  "stage1_features",
  None,
  "The stage-1 feature file to use for input 'stage1' instead of training stage 1 in WORKDIR.",
)


def main(argv):
  del argv
  reporting.show_progress()
  config, workdir = _CONFIG.value, _WORKDIR.value
  inputs = feature_inputs(config, workdir, _INPUTS.value, stage1_features=_STAGE1_FEATURES.value)
  result = sweep.run_sweep(
    config,
    workdir,
    inputs,
    _GRID.value,
    [int(s) for s in _SEEDS.value],
    parallel=_PARALLEL.value,
    time_budget=_TIME_BUDGET.value,
    max_new_runs=_MAX_NEW_RUNS.value,
    vmap=_VMAP.value,
  )
  print(sweep.format_table(result["table"]))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
