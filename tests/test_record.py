"""A run's record (training/record.py): its identity, its summary, and "finished with these
settings?"."""

import json
import os

import numpy as np
import pytest

from alignrec_jax.errors import WorkdirError
from alignrec_jax.training import record, stage2
from configs import test as test_config


def _identity(config, workdir):
  return stage2.run_identity(config, str(workdir))


def test_the_identity_holds_what_a_run_computes(tmp_path):
  config = test_config.get_config()
  config.data.cache_dir = str(tmp_path / "data")
  ident = _identity(config, tmp_path)
  fields = ident["config"]
  assert ident["stage"] == "stage 2" and ident["inputs"] == {}  # synthetic: from the config
  assert fields["optim.lr"] == 1e-3 and fields["model.alignrec.loss.cl_weight"] == 0.01
  # Neutral fields, other models' groups and other stages' groups are not part of it.
  for absent in ("train.checkpoint_every", "eval.chunk_size", "parallel.num_devices"):
    assert absent not in fields
  assert not [k for k in fields if k.startswith(("model.lightgcn.", "stage1.", "pipeline."))]
  config.train.checkpoint_every = 5
  config.eval.chunk_size = 8
  config.model.lightgcn.embed_dim = 3
  config.data.cache_dir = str(tmp_path / "elsewhere")
  assert _identity(config, tmp_path) == ident
  config.optim.lr = 2e-3
  assert record.differences(ident, _identity(config, tmp_path)) == ["optim.lr: 0.001 -> 0.002"]
  config.train.max_epochs = 9
  changed = _identity(config, tmp_path)
  assert record.differences(ident, changed, free=("train.max_epochs",)) == [
    "optim.lr: 0.001 -> 0.002"
  ]


def test_paths_count_by_name_and_input_files_by_contents(tmp_path):
  features = tmp_path / "a" / "f.npy"
  features.parent.mkdir()
  np.save(features, np.ones((80, 3), np.float32))
  config = test_config.get_config()
  config.data.features = (str(features),)
  ident = _identity(config, tmp_path)
  assert ident["config"]["data.features"] == ["f.npy"]
  assert ident["inputs"] == {"f.npy": record.file_digest(str(features))}
  moved = tmp_path / "b" / "f.npy"
  moved.parent.mkdir()
  os.replace(features, moved)
  config.data.features = (str(moved),)
  assert _identity(config, tmp_path) == ident  # a moved file of the same contents
  np.save(moved, np.zeros((80, 3), np.float32))
  assert _identity(config, tmp_path)["inputs"] != ident["inputs"]
  assert record.differences(ident, _identity(config, tmp_path))[0].startswith("input f.npy: ")
  config.model.name = "lightgcn"  # an ID-only model reads no feature file
  assert _identity(config, tmp_path)["inputs"] == {}


def test_finished_means_a_summary_of_the_same_identity(tmp_path):
  ident = {"stage": "stage 2", "config": {"optim.lr": 0.001}, "inputs": {}}
  assert record.finished(str(tmp_path), ident) is None
  summary = {"format": record.FORMAT_VERSION, "identity": ident, "epochs_run": 3}
  record.write_summary(str(tmp_path), summary)
  assert record.finished(str(tmp_path), ident) == summary
  other = {**ident, "config": {"optim.lr": 0.002}}
  assert record.finished(str(tmp_path), other) is None
  assert record.stored_identity(str(tmp_path)) == ident
  record.remove_summary(str(tmp_path))
  assert (
    record.read_summary(str(tmp_path)) is None and record.stored_identity(str(tmp_path)) is None
  )


def test_an_older_workdir_is_refused_in_one_line_naming_its_format(tmp_path):
  (tmp_path / record.SUMMARY_FILE).write_text(json.dumps({"format": 2, "epochs_run": 1}))
  with pytest.raises(WorkdirError, match="workdir format 2 .*reads format 3") as info:
    record.read_summary(str(tmp_path))
  assert "\n" not in str(info.value)


def test_the_pipeline_selection_names_the_chosen_run(tmp_path):
  assert record.selected_run(str(tmp_path)) is None
  selection = {"selected": "raw", "candidates": {"raw": {"workdir": "stage2_raw"}}}
  record.write_selection(str(tmp_path), selection)
  assert record.selected_run(str(tmp_path)) == str(tmp_path / "stage2_raw")
