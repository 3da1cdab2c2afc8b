r"""The paper's comparison on one dataset: every model, several seeds, one report.

  python -m launch.compare --config=configs/lfm2k.py --workdir=runs/lfm2k_compare \
      --model_configs=freedom=configs/freedom_lfm2k.py,bm3=configs/bm3_lfm2k.py \
      --model_configs=mgcn=configs/mgcn_lfm2k.py --parallel=2

Models (`--models`, default all): bpr (BPR-MF), vbpr, lightgcn, freedom, bm3, mgcn (MMRec's
defaults: lr 1e-3, without decay but for MGCN's, the feature files as given), alignrec_raw
(AlignRec on the raw features), alignrec (on the stage-1 features; stage 1 trains once in
WORKDIR/stage1, or --stage1_features=FILE). `--model_configs=MODEL=FILE,...` gives a model a
config file of its own instead of the dataset's (`--config.*` flags apply to the dataset config
only). Each run
trains in WORKDIR/runs/MODEL/SETTING/seed_N in a process of its own, resumable, read back when
finished. Then AlignRec's ablation (`--ablations`, `launch.ablate`'s variants) on the same seeds
and stage 1, its full and raw-feature rows read back from the comparison's AlignRec runs. Writes
WORKDIR/report.md (tables and plots beside it), WORKDIR/compare.json and WORKDIR/ablation.md.
"""

import importlib.util
import os

from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import compare
from alignrec_jax.training import reporting
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "The dataset's config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The comparison's folder.", required=True)
_MODELS = flags.DEFINE_list("models", None, "Models to compare (default: all; see above).")
_MODEL_CONFIGS = flags.DEFINE_multi_string(
  "model_configs",
  [],
  "MODEL=CONFIG_FILE[,MODEL=CONFIG_FILE...]: a model's own config file instead of --config "
  "(the flag may repeat).",
)
_SEEDS = flags.DEFINE_list("seeds", ["999", "1000", "1001"], "Seeds.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once.")
_STAGE1_FEATURES = flags.DEFINE_string(
  "stage1_features", None, "A stage-1 feature file to use instead of training stage 1."
)
_ABLATIONS = flags.DEFINE_list(
  "ablations",
  None,
  "AlignRec's ablation variants for the report (launch.ablate's; default: all of them; "
  "'none': no ablation).",
)


def load_config_file(path: str):
  """`get_config()` of the config file at `path` (as --config reads one)."""
  if not os.path.isfile(path):
    raise ConfigError(f"--model_configs: {path}: no such config file")
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv):
  del argv
  reporting.show_progress()
  model_configs = {}
  for entry in (e for value in _MODEL_CONFIGS.value for e in value.split(",")):
    key, sep, path = entry.partition("=")
    if not sep or not key or not path:
      raise ConfigError(f"--model_configs: {entry!r}: expected MODEL=CONFIG_FILE")
    model_configs[key] = load_config_file(path)
  result = compare.run_comparison(
    _CONFIG.value,
    _WORKDIR.value,
    [int(s) for s in _SEEDS.value],
    keys=_MODELS.value,
    model_configs=model_configs,
    stage1_features=_STAGE1_FEATURES.value,
    parallel=_PARALLEL.value,
  )
  if _ABLATIONS.value != ["none"]:
    result = compare.run_ablation(
      model_configs.get("alignrec", _CONFIG.value),
      _WORKDIR.value,
      result,
      keys=_ABLATIONS.value,
      stage1_features=_STAGE1_FEATURES.value,
      parallel=_PARALLEL.value,
    )
  print(compare.write_report(result, _WORKDIR.value))
  print(f"report: {os.path.join(_WORKDIR.value, compare.REPORT_FILE)}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
