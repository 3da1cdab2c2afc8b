"""Both stages in one call: stage 1's item features, then stage 2 trained on them.

WORKDIR/stage1 holds stage 1's run (`training.stage1.run_stage1`); WORKDIR/stage2 is an
ordinary stage-2 run (`runs.stage2`) whose feature file is stage 1's output. Each stage resumes
from its checkpoints (a finished one is read back); stage 2 starts over whenever its input
features changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any

import ml_collections

from alignrec_jax import files
from alignrec_jax.data import load_mmrec
from alignrec_jax.experiments import runs
from alignrec_jax.training import reporting, stage1, stage2
from alignrec_jax.training.parallel import make_parallel

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
  files.atomic_write(record, digest + "\n")


def run_pipeline(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  redo_stage1: bool = False,
  allow_config_change: bool = False,
) -> dict[str, Any]:
  """Stage 1, then stage 2 on its features; returns stage 2's summary (see `runs.stage2`).

  Both stages' configs are checked before any data is read; the pipeline holds WORKDIR's lock
  (each stage also holds its own folder's).
  """
  stage2.check_config(config)
  stage1.check_config(config.stage1)
  folder = stage2.dataset_folder(config.data, workdir)
  num_items = load_mmrec(folder, inter_file=config.data.inter_file or None).num_items
  with files.WorkdirLock(workdir):
    features = stage1.run_stage1(
      config.stage1,
      folder,
      workdir,
      num_items=num_items,
      seed=config.seed,
      redo=redo_stage1,
      allow_config_change=allow_config_change,
      parallel=make_parallel(config.parallel),
    )
    second = config.copy_and_resolve_references()
    second.data.features = (os.path.abspath(features),)
    directory = os.path.join(workdir, "stage2")
    prepare_stage2_workdir(directory, features)
    return runs.stage2(second, directory, allow_config_change=allow_config_change)
