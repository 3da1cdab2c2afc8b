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
from conftest import tiny_config

from alignrec_jax import content, experiment, pretraining, stage1
from alignrec_jax.models.fusion import ModalityInput

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tiny_content(tmp_path):
  config = tiny_config()
  folder = experiment.dataset_folder(config.data, str(tmp_path))
  dataset = experiment.load_dataset(config.data, str(tmp_path))
  loaded = content.load_content(folder, config.stage1.modalities, num_items=dataset.num_items,
                                vector_tokens=config.stage1.vector_tokens)
  return config, folder, loaded


def test_gather_batch_marks_padding_rows_absent():
  inputs = {"v": ModalityInput(values=jnp.arange(12.0).reshape(4, 3),
                               present=jnp.array([True, False, True, True])),
            "c": ModalityInput(values=jnp.arange(8).reshape(4, 2))}
  batch = pretraining.gather_batch(inputs, jnp.array([3, 1, 0]), jnp.array([True, True, False]))
  np.testing.assert_array_equal(batch["v"].values, np.arange(12.0).reshape(4, 3)[[3, 1, 0]])
  np.testing.assert_array_equal(batch["v"].present, [True, False, False])
  np.testing.assert_array_equal(batch["c"].present, [True, True, False])
  assert batch["c"].mask is None


def test_an_epoch_is_one_step_per_batch_and_deterministic(tmp_path):
  config, _, loaded = _tiny_content(tmp_path)
  s1 = config.stage1
  module = pretraining.build_encoder(s1, loaded)
  steps = -(-loaded.num_items // s1.batch_size)
  optimizer = pretraining.make_optimizer(s1, steps_per_epoch=steps)
  inputs = jax.device_put(loaded.inputs)
  example = pretraining.gather_batch(inputs, jnp.arange(4), jnp.ones(4, bool))
  epoch = pretraining.make_pretrain_epoch(
      module, optimizer, num_items=loaded.num_items, batch_size=s1.batch_size,
      weights=s1.weights.to_dict(), mask_fraction=s1.mask_fraction, temperature=s1.temperature)
  results = []
  for _ in range(2):
    state = stage1.init_state(module, optimizer, example, jax.random.key(0))
    state, terms = epoch(state, inputs, jax.random.key(1))
    results.append((state, terms))
  (a, terms_a), (b, terms_b) = results
  assert int(a.step) == steps
  assert all(np.isfinite(float(v)) for v in terms_a.values())
  assert set(terms_a) == {"loss", "mlm/image", "mlm/text", "contrastive", "fused"}
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  assert {k: float(v) for k, v in terms_a.items()} == {k: float(v) for k, v in terms_b.items()}


def test_the_last_partial_batch_adds_nothing_from_its_padding(tmp_path):
  """Padding rows are absent items: the loss of a padded batch equals that of its real rows."""
  config, _, loaded = _tiny_content(tmp_path)
  s1 = config.stage1
  module = pretraining.build_encoder(s1, loaded)
  inputs = jax.device_put(loaded.inputs)
  rows = jnp.arange(5)
  real = pretraining.gather_batch(inputs, rows, jnp.ones(5, bool))
  padded = pretraining.gather_batch(inputs, jnp.concatenate([rows, jnp.zeros(3, rows.dtype)]),
                                    jnp.arange(8) < 5)
  params = jax.jit(module.init)(jax.random.key(0), real)
  # Same masks on the real rows: sample them for the padded batch and cut them down.
  key = jax.random.key(7)
  masks = stage1.sample_masks(key, padded, module.specs, s1.mask_fraction)
  loss_padded = _loss_with_masks(module, params, padded, masks, s1)
  loss_real = _loss_with_masks(module, params, real, {k: v[:5] for k, v in masks.items()}, s1)
  np.testing.assert_allclose(loss_padded, loss_real, rtol=1e-5)


def _loss_with_masks(module, params, inputs, masks, s1):
  def loss(params, inputs, masks):
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(stage1, "sample_masks", lambda *args, **kwargs: masks)
      return stage1.pretrain_loss(params, module, inputs, jax.random.key(0),
                                  weights=s1.weights.to_dict(), mask_fraction=s1.mask_fraction,
                                  temperature=s1.temperature)[0]

  return float(jax.jit(loss)(params, inputs, masks))  # jitted: op-by-op would be slower


def test_run_pretraining_writes_reuses_and_resumes(tmp_path):
  config, folder, loaded = _tiny_content(tmp_path)
  kwargs = dict(num_items=loaded.num_items, seed=0)
  path = pretraining.run_pretraining(config.stage1, folder, str(tmp_path / "a"), **kwargs)
  features = np.load(path)
  assert features.shape == (loaded.num_items, config.stage1.output_dim)
  assert np.isfinite(features).all() and np.std(features) > 0
  record = json.loads(pathlib.Path(path).with_suffix(".json").read_text())
  assert record["shape"] == list(features.shape)

  # Same settings: reused without training (the checkpoints could even be gone).
  shutil.rmtree(tmp_path / "a" / "stage1" / "checkpoints")
  assert pretraining.run_pretraining(config.stage1, folder, str(tmp_path / "a"), **kwargs) == path
  np.testing.assert_array_equal(np.load(path), features)

  # A run killed after its first epoch resumes to the same features as an uninterrupted one.
  killed = tmp_path / "b"
  pretraining.run_pretraining(config.stage1, folder, str(killed), **kwargs)
  stage1_dir = killed / "stage1"
  shutil.rmtree(stage1_dir / "checkpoints" / str(config.stage1.epochs - 1))
  for name in (pretraining.FEATURE_FILE, pretraining.RECORD_FILE):
    os.remove(stage1_dir / name)
  resumed = pretraining.run_pretraining(config.stage1, folder, str(killed), **kwargs)
  np.testing.assert_array_equal(np.load(resumed), features)

  # Other settings: trained again, from scratch.
  config.stage1.lr = 3e-3
  again = pretraining.run_pretraining(config.stage1, folder, str(tmp_path / "a"), **kwargs)
  assert not np.array_equal(np.load(again), features)


def test_an_unfinished_run_with_other_settings_is_not_resumed(tmp_path):
  config, folder, loaded = _tiny_content(tmp_path)
  kwargs = dict(num_items=loaded.num_items, seed=0)
  pretraining.run_pretraining(config.stage1, folder, str(tmp_path), **kwargs)
  for name in (pretraining.FEATURE_FILE, pretraining.RECORD_FILE):
    os.remove(tmp_path / "stage1" / name)
  config.stage1.lr = 3e-3
  with pytest.raises(ValueError, match="unfinished stage-1 run with other settings"):
    pretraining.run_pretraining(config.stage1, folder, str(tmp_path), **kwargs)
  pretraining.run_pretraining(config.stage1, folder, str(tmp_path), redo=True, **kwargs)


def test_pipeline_runs_both_stages_then_reuses_stage1(tmp_path):
  flags = ["--config=configs/default.py", f"--workdir={tmp_path}",
           "--config.data.synthetic.num_users=120", "--config.data.synthetic.num_items=80",
           "--config.data.synthetic.mean_user_interactions=12", "--config.train.batch_size=256",
           "--config.train.max_epochs=2", "--config.eval.chunk_size=64",
           "--config.stage1.width=16", "--config.stage1.num_heads=2",
           "--config.stage1.num_layers=1", "--config.stage1.output_dim=12",
           "--config.stage1.batch_size=32", "--config.stage1.epochs=2",
           "--config.stage1.warmup_epochs=1"]
  cmd = [sys.executable, "-m", "launch.pipeline", *flags]
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  assert "stage 1: wrote 80 x 12 item features" in first.stderr
  assert "features: stage1_feat 12-d" in first.stderr
  summary = json.loads((tmp_path / "stage2" / "summary.json").read_text())
  assert summary["epochs_run"] == 2 and summary["test"]["recall@20"] > 0
  second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
  assert "stage 1: reusing" in second.stderr
  assert "resumed from the checkpoint of epoch 1" in second.stderr


def test_stage2_starts_over_only_when_its_features_change(tmp_path):
  from alignrec_jax import pipeline
  features = tmp_path / "f.npy"
  np.save(features, np.ones((3, 2), np.float32))
  stage2 = tmp_path / "stage2"
  pipeline.prepare_stage2_workdir(str(stage2), str(features))
  (stage2 / "metrics.jsonl").write_text("{}\n")
  pipeline.prepare_stage2_workdir(str(stage2), str(features))  # same contents: kept
  assert (stage2 / "metrics.jsonl").exists()
  np.save(features, np.zeros((3, 2), np.float32))
  pipeline.prepare_stage2_workdir(str(stage2), str(features))  # new contents: emptied
  assert not (stage2 / "metrics.jsonl").exists() and (stage2 / "stage1_feat.sha256").exists()
