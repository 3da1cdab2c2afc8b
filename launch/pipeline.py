r"""Both stages of AlignRec: pre-train the cross-modal encoder, then train stage 2 on its output.

  python -m launch.pipeline --config=configs/ml100k.py --workdir=runs/ml100k
  python -m launch.pipeline --config=configs/lfm2k.py --workdir=runs/lfm2k --config.stage1.epochs=40

WORKDIR/stage1 holds stage 1's checkpoints, metrics.jsonl and the item features it writes
(stage1_feat.npy); WORKDIR/stage2 is an ordinary `launch.train` run fed with those features.
Each stage resumes from its checkpoints. A second run reuses finished stage-1 features made
with the same settings (`--redo_stage1` trains stage 1 again); stage 2 starts over whenever
its input features changed.
"""

import hashlib
import os
import shutil

from absl import app, flags
from ml_collections import config_flags

from alignrec_jax import experiment, pretraining, reporting, train
from alignrec_jax.data import load_mmrec

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ml100k.py", "Experiment config.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Both stages write under this folder.",
                               required=True)
_REDO_STAGE1 = flags.DEFINE_bool("redo_stage1", False,
                                 "Train stage 1 again even if its output is there.")

_INPUT_DIGEST = "stage1_feat.sha256"


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def prepare_stage2_workdir(directory: str, features_path: str) -> None:
  """Empties `directory` when its run was trained on other features than `features_path`."""
  digest = _sha256(features_path)
  record = os.path.join(directory, _INPUT_DIGEST)
  if os.path.exists(directory):
    previous = open(record).read().strip() if os.path.exists(record) else None
    if previous != digest:
      reporting.log(f"stage 2: {directory} was trained on other features; starting it over")
      shutil.rmtree(directory)
  os.makedirs(directory, exist_ok=True)
  with open(record, "w") as f:
    f.write(digest + "\n")


def main(argv):
  del argv
  reporting.show_progress()
  config, workdir = _CONFIG.value, _WORKDIR.value
  folder = experiment.dataset_folder(config.data, workdir)
  num_items = load_mmrec(folder, inter_file=config.data.inter_file or None).num_items
  features = pretraining.run_pretraining(config.stage1, folder, workdir, num_items=num_items,
                                         seed=config.seed, redo=_REDO_STAGE1.value)

  stage2 = config.copy_and_resolve_references()
  stage2.data.features = (os.path.abspath(features),)
  stage2_dir = os.path.join(workdir, "stage2")
  prepare_stage2_workdir(stage2_dir, features)
  summary = train.train_and_evaluate(stage2, stage2_dir)
  reporting.finish_run(stage2_dir, summary)


if __name__ == "__main__":
  app.run(main)
