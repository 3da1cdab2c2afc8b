"""Both stages in one call: stage 1's item features, then stage 2 trained on them.

WORKDIR/stage1 holds stage 1's run (`pretraining.run_pretraining`); WORKDIR/stage2 is an
ordinary stage-2 run (`train.train_and_evaluate`) whose feature file is stage 1's output. Each
stage resumes from its checkpoints; stage 2 starts over whenever its input features changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any

import ml_collections

from alignrec_jax import experiment, pretraining, reporting, train
from alignrec_jax.data import load_mmrec

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
    previous = None
    if os.path.exists(record):
      with open(record) as f:
        previous = f.read().strip()
    if previous != digest:
      reporting.log(f"stage 2: {directory} was trained on other features; starting it over")
      shutil.rmtree(directory)
  os.makedirs(directory, exist_ok=True)
  with open(record, "w") as f:
    f.write(digest + "\n")


def run_pipeline(config: ml_collections.ConfigDict, workdir: str, *,
                 redo_stage1: bool = False) -> dict[str, Any]:
  """Stage 1, then stage 2 on its features; returns stage 2's summary (see `train`)."""
  folder = experiment.dataset_folder(config.data, workdir)
  num_items = load_mmrec(folder, inter_file=config.data.inter_file or None).num_items
  features = pretraining.run_pretraining(config.stage1, folder, workdir, num_items=num_items,
                                         seed=config.seed, redo=redo_stage1)
  stage2 = config.copy_and_resolve_references()
  stage2.data.features = (os.path.abspath(features),)
  stage2_dir = os.path.join(workdir, "stage2")
  prepare_stage2_workdir(stage2_dir, features)
  summary = train.train_and_evaluate(stage2, stage2_dir)
  reporting.finish_run(stage2_dir, summary)
  return summary
