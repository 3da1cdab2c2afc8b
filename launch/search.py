r"""Hyper-parameter search on validation only: grid, random or TPE, pruning hopeless trials.

  python -m launch.search --config=configs/ml100k.py --workdir=runs/ml100k_search \
      --space=optim.lr=loguniform:1e-4:3e-3 --space=model.alignrec.loss.cl_weight=choice:0.01,0.1 \
      --sampler=tpe --trials=12 --rungs=10,20 --parallel=2

--space=FIELD=KIND:SPEC, any config field: choice:a,b,c | uniform:LOW:HIGH | loguniform:LOW:HIGH
| int:LOW:HIGH. --sampler: grid (every combination of choice dimensions), random (--trials
draws) or tpe (Optuna's TPE; pip install -e '.[search]'). --rungs: epochs at which a trial
whose best validation Recall@20 so far is below the median of all trials there stops. Trials
train in waves of --parallel, each a stage-2 run in WORKDIR/runs/search/SETTING/seed_N (the
config's seed), resumable. The chosen setting is the best on validation Recall@20; its test
metrics are printed beside it and never used to choose (the public code selects on test).
Writes WORKDIR/search.json.
"""

from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.experiments import search
from alignrec_jax.training import reporting
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The search's folder.", required=True)
_SPACE = flags.DEFINE_multi_string("space", [], "FIELD=KIND:SPEC: one searched dimension.")
_SAMPLER = flags.DEFINE_enum("sampler", "random", search.SAMPLERS, "How settings are proposed.")
_TRIALS = flags.DEFINE_integer("trials", 8, "Trials (random, tpe; grid takes its size).")
_RUNGS = flags.DEFINE_list("rungs", [], "Epochs at which below-median trials are pruned.")
_PRUNE_AFTER = flags.DEFINE_integer(
  "prune_after", 4, "Prune at a rung only once this many trials have reached it."
)
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials at once (one wave).")
_SAMPLER_SEED = flags.DEFINE_integer("sampler_seed", 0, "Seed of the random and TPE samplers.")


def main(argv):
  del argv
  reporting.show_progress()
  result = search.run_search(
    _CONFIG.value,
    _WORKDIR.value,
    _SPACE.value,
    sampler=_SAMPLER.value,
    trials=_TRIALS.value,
    rungs=[int(r) for r in _RUNGS.value],
    prune_after=_PRUNE_AFTER.value,
    parallel=_PARALLEL.value,
    seed=_SAMPLER_SEED.value,
  )
  print(search.format_result(result))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
