"""The stage-1 run: the scanned epoch, resuming, the output file and its reuse, the pipeline."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignrec_jax.data import content
from alignrec_jax.data.content import ModalityInput
from alignrec_jax.errors import WorkdirError
from alignrec_jax.models import encoder as objective
from alignrec_jax.training import record, stage1, stage2_setup
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tiny_content(tmp_path):
  config = test_config.get_config()
  folder = stage2_setup.dataset_folder(config.data, str(tmp_path))
  dataset = stage2_setup.load_dataset(config.data, str(tmp_path))
  loaded = content.load_content(
    folder,
    config.stage1.data.modalities,
    num_items=dataset.num_items,
    vector_tokens=config.stage1.model.vector_tokens,
  )
  return config, folder, loaded


def test_gather_batch_marks_padding_rows_absent():
  inputs = {
    "v": ModalityInput(
      values=jnp.arange(12.0).reshape(4, 3), present=jnp.array([True, False, True, True])
    ),
    "c": ModalityInput(values=jnp.arange(8).reshape(4, 2)),
  }
  batch = stage1.gather_batch(inputs, jnp.array([3, 1, 0]), jnp.array([True, True, False]))
  np.testing.assert_array_equal(batch["v"].values, np.arange(12.0).reshape(4, 3)[[3, 1, 0]])
  np.testing.assert_array_equal(batch["v"].present, [True, False, False])
  np.testing.assert_array_equal(batch["c"].present, [True, True, False])
  assert batch["c"].mask is None


@pytest.mark.slow
def test_an_epoch_is_one_step_per_batch_and_deterministic(tmp_path):
  config, _, loaded = _tiny_content(tmp_path)
  s1 = config.stage1
  pretrainer = stage1.build_pretrainer(s1, loaded)
  steps = -(-loaded.num_items // s1.train.batch_size)
  inputs = jax.device_put(loaded.inputs)
  example = stage1.gather_batch(inputs, jnp.arange(4), jnp.ones(4, bool))
  epoch = pretrainer.make_train_epoch()
  results = []
  for _ in range(2):
    state = pretrainer.init_state(jax.random.key(0), example)
    state, terms = epoch(state, inputs, jax.random.key(1))
    results.append((state, terms))
  (a, terms_a), (b, terms_b) = results
  assert int(a.step) == steps
  assert epoch._cache_size() == 1
  assert all(np.isfinite(float(v)) for v in terms_a.values())
  assert set(terms_a) == {"loss", "mlm/image", "mlm/text", "contrastive", "fused"}
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  assert {k: float(v) for k, v in terms_a.items()} == {k: float(v) for k, v in terms_b.items()}


@pytest.mark.slow
def test_the_last_partial_batch_adds_nothing_from_its_padding(tmp_path):
  """Padding rows are absent items: the loss of a padded batch equals that of its real rows."""
  config, _, loaded = _tiny_content(tmp_path)
  s1 = config.stage1
  module = stage1.build_encoder(s1, loaded.specs)
  inputs = jax.device_put(loaded.inputs)
  rows = jnp.arange(5)
  real = stage1.gather_batch(inputs, rows, jnp.ones(5, bool))
  padded = stage1.gather_batch(
    inputs, jnp.concatenate([rows, jnp.zeros(3, rows.dtype)]), jnp.arange(8) < 5
  )
  params = jax.jit(module.init)(jax.random.key(0), real)["params"]
  # Same masks on the real rows: sample them for the padded batch and cut them down.
  key = jax.random.key(7)
  masks = objective.sample_masks(key, padded, module.specs, s1.loss.mask_fraction)
  loss_padded = _loss_with_masks(module, params, padded, masks, s1)
  loss_real = _loss_with_masks(module, params, real, {k: v[:5] for k, v in masks.items()}, s1)
  np.testing.assert_allclose(loss_padded, loss_real, rtol=1e-5)


def _loss_with_masks(module, params, inputs, masks, s1):
  def loss(params, inputs, masks):
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(objective, "sample_masks", lambda *args, **kwargs: masks)
      return objective.pretrain_loss(
        params,
        module,
        inputs,
        jax.random.key(0),
        weights=s1.loss.weights.to_dict(),
        mask_fraction=s1.loss.mask_fraction,
        temperature=s1.loss.temperature,
      )[0]

  return float(jax.jit(loss)(params, inputs, masks))  # jitted: op-by-op would be slower


@pytest.mark.slow
def test_run_pretraining_writes_reuses_and_resumes(tmp_path):
  config, folder, loaded = _tiny_content(tmp_path)
  kwargs = dict(num_items=loaded.num_items, seed=0)
  path = stage1.run_stage1(config.stage1, folder, str(tmp_path / "a"), **kwargs)
  features = np.load(path)
  assert features.shape == (loaded.num_items, config.stage1.model.output_dim)
  assert np.isfinite(features).all() and np.std(features) > 0
  summary = record.read_summary(str(tmp_path / "a" / "stage1"))
  assert summary["output"] == {"file": stage1.FEATURE_FILE, "shape": list(features.shape)}
  assert summary["stage"] == "stage 1" and summary["epochs_run"] == config.stage1.train.epochs

  # Same settings: reused without training (the checkpoints could even be gone).
  shutil.rmtree(tmp_path / "a" / "stage1" / "checkpoints")
  assert stage1.run_stage1(config.stage1, folder, str(tmp_path / "a"), **kwargs) == path
  np.testing.assert_array_equal(np.load(path), features)

  # A run killed after its first epoch resumes to the same features as an uninterrupted one.
  killed = tmp_path / "b"
  stage1.run_stage1(config.stage1, folder, str(killed), **kwargs)
  stage1_dir = killed / "stage1"
  shutil.rmtree(stage1_dir / "checkpoints" / str(config.stage1.train.epochs - 1))
  for name in (record.SUMMARY_FILE, stage1.FEATURE_FILE):  # a kill in the last epoch: neither
    os.remove(stage1_dir / name)
  resumed = stage1.run_stage1(config.stage1, folder, str(killed), **kwargs)
  np.testing.assert_array_equal(np.load(resumed), features)

  # Other settings: trained again, from scratch.
  config.stage1.optim.lr = 3e-3
  again = stage1.run_stage1(config.stage1, folder, str(tmp_path / "a"), **kwargs)
  assert not np.array_equal(np.load(again), features)


@pytest.mark.slow
def test_an_unfinished_run_with_other_settings_is_not_resumed(tmp_path):
  config, folder, loaded = _tiny_content(tmp_path)
  kwargs = dict(num_items=loaded.num_items, seed=0)
  stage1.run_stage1(config.stage1, folder, str(tmp_path), **kwargs)
  for name in (record.SUMMARY_FILE, stage1.FEATURE_FILE):
    os.remove(tmp_path / "stage1" / name)
  config.stage1.optim.lr = 3e-3
  with pytest.raises(WorkdirError, match="holds a stage 1 run started with other settings"):
    stage1.run_stage1(config.stage1, folder, str(tmp_path), **kwargs)
  stage1.run_stage1(config.stage1, folder, str(tmp_path), redo=True, **kwargs)


@pytest.mark.slow
def test_pipeline_runs_both_stages_then_reuses_stage1(tmp_path):
  flags = [
    "--config=configs/test.py",
    f"--workdir={tmp_path}",
    "--config.train.max_epochs=2",
  ]
  cmd = [sys.executable, "-m", "launch.pipeline", *flags]
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  assert "stage 1: wrote 80 x 12 item features" in first.stderr
  assert "features: stage1_feat 12-d" in first.stderr
  summary = json.loads((tmp_path / "stage2" / "summary.json").read_text())
  assert summary["epochs_run"] == 2 and summary["test"]["recall@20"] > 0
  # Stage 2 also ran on the raw concatenation, and the better of the two on validation is kept.
  raw = json.loads((tmp_path / "stage2_raw" / "summary.json").read_text())
  result = json.loads((tmp_path / "pipeline.json").read_text())
  valid = {"stage1": summary["valid"]["recall@20"], "raw": raw["valid"]["recall@20"]}
  assert result["selected"] == max(valid, key=valid.get)
  assert result["margin"] == pytest.approx(abs(valid["stage1"] - valid["raw"]))
  assert "pipeline: using stage 2 on" in first.stderr
  second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  assert "stage 1: reusing" in second.stderr
  assert second.stderr.count("has finished already (2 epochs)") == 2
  assert "recall@20" in second.stderr  # the best epoch's table, read back
  assert json.loads((tmp_path / "pipeline.json").read_text()) == result
