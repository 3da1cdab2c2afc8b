"""Data parallelism: the epochs on 2 and 4 (fake CPU) devices and on 2 processes give the
single-device run's parameters on the same global batch, to float rounding."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from alignrec_jax.errors import ConfigError
from alignrec_jax.training import stage2
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5  # float32 sums in another order; the tiny run's values are O(0.1)


def _env(devices: int) -> dict:
  env = dict(os.environ, PYTHONPATH=str(REPO))
  # after conftest's flags, which it keeps
  env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices}"
  return env


@pytest.mark.slow
def test_both_stages_on_1_2_and_4_devices_agree(tmp_path):
  """One process with 4 fake devices trains on sub-meshes of 1, 2 and 4 of them."""
  result = subprocess.run(
    [sys.executable, str(REPO / "tests" / "multidevice_check.py"), str(tmp_path)],
    cwd=REPO,
    env=_env(4),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  one = np.load(tmp_path / "users_1.npy")
  features = np.load(tmp_path / "features_1.npy")
  for count in ("2", "4"):
    np.testing.assert_allclose(np.load(tmp_path / f"users_{count}.npy"), one, atol=TOLERANCE)
    np.testing.assert_allclose(
      np.load(tmp_path / f"features_{count}.npy"), features, atol=TOLERANCE
    )
    for metric, value in out["stage2"]["1"].items():
      assert out["stage2"][count][metric] == pytest.approx(value, abs=1e-6), metric
  assert out["evaluation"] and all(out["evaluation"].values()), out["evaluation"]
  assert out["partitioned_propagation"] < 1e-5
  assert out["epochs_keep_their_layout"]
  for name in ("sharded", "sharded_resumed"):
    np.testing.assert_allclose(np.load(tmp_path / f"{name}_users.npy"), one, atol=TOLERANCE)
  # The tiny run's users (120), items (80) and both (200): each table padded to 1024 rows, 256
  # a device, its Adam moments alike; the feature projection's kernel stays replicated.
  rows = out["table_rows_per_device"]
  tables = [name for name in rows if "features" in name or "embedding" in name]
  assert len(tables) == 6, rows  # 2 tables x (parameter, Adam's mu and nu)
  for name, (total, per_device) in rows.items():
    assert (total, per_device) == ((1024, 256) if name in tables else (total, total)), name
  assert "3 devices do not split evenly" in out["three_devices_refused"]
  grouped = np.load(tmp_path / "grouped_users_1.npy")
  np.testing.assert_allclose(np.load(tmp_path / "grouped_users_2.npy"), grouped, atol=TOLERANCE)
  assert np.abs(grouped - one).max() > 10 * TOLERANCE  # per-slice terms are another objective


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
  """Two processes (one CPU device each, gloo collectives) form one 2-device mesh, with the
  tables split by rows across the processes; the single process keeps them whole."""
  flags = [
    "--config=configs/test.py",
    "--config.train.max_epochs=2",
    f"--config.data.cache_dir={tmp_path / 'data'}",
  ]
  port = _free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "launch.train",
        *flags,
        "--config.parallel.shard_tables=True",
        f"--workdir={tmp_path / 'hosts'}",
        f"--coordinator_address=localhost:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ],
      cwd=REPO,
      env=_env(1),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  errors = [p.communicate(timeout=600)[1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
  single = subprocess.run(
    [sys.executable, "-m", "launch.train", *flags, f"--workdir={tmp_path / 'one'}"],
    cwd=REPO,
    env=_env(1),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert single.returncode == 0, single.stderr[-3000:]
  hosts = json.loads((tmp_path / "hosts" / "summary.json").read_text())
  one = json.loads((tmp_path / "one" / "summary.json").read_text())
  for metric, value in one["test"].items():
    assert hosts["test"][metric] == pytest.approx(value, abs=1e-6), metric
  assert "stage 2 epoch" not in errors[1], "only process 0 writes the console and records"
  from alignrec_jax.serving import load_run

  np.testing.assert_allclose(
    load_run(str(tmp_path / "hosts"), "latest").user_embeddings,
    load_run(str(tmp_path / "one"), "latest").user_embeddings,
    atol=TOLERANCE,
  )


def test_a_batch_the_devices_cannot_share_is_a_config_error():
  config = test_config.get_config()
  config.parallel.num_devices = 2
  with pytest.raises(ConfigError, match=r"2 asked, 1 available|does not split evenly"):
    stage2.check_config(config)


@pytest.mark.parametrize(
  "model, groups, message",
  [("alignrec", 3, "do not split the batch size"), ("lightgcn", 2, "no in-batch terms")],
)
def test_in_batch_groups_that_cannot_apply_are_config_errors(model, groups, message):
  config = test_config.get_config()
  config.model.name = model
  config.train.in_batch_groups = groups
  with pytest.raises(ConfigError, match=message):
    stage2.check_config(config)


# The row tables each model declares (`ModelSpec.tables`, under "net"), and the fine-tuned
# feature table F where the model fine-tunes it: exactly what shard_tables splits by rows.
SHARDED = {
  "alignrec": {("net", "ids", "embedding"), ("features",)},
  "bm3": {("net", "ids", "embedding"), ("features",)},
  "bpr": {("net", "embedding")},
  "freedom": {("net", "ids", "embedding"), ("features",)},
  "lightgcn": {("net", "ids", "embedding")},
  "mgcn": {("net", "ids", "embedding"), ("features",)},
  "vbpr": {("net", "user_embedding"), ("net", "item_embedding")},
}


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_shard_tables_pads_exactly_the_paths_each_model_declares(tmp_path, name):
  import jax

  from alignrec_jax.training import stage2_setup
  from alignrec_jax.training.parallel import TABLE_ROW_QUANTUM, is_table

  config = test_config.get_config()
  config.model.name = name
  config.parallel.shard_tables = True
  config.model[name].embed_dim = 4
  exp = stage2_setup.build_experiment(config, str(tmp_path))
  recommender = stage2.build_recommender(config, exp)
  assert recommender.tables == SHARDED[name]
  state = jax.eval_shape(recommender.init_state, jax.random.key(0), exp.train_data)
  padded = {
    jax.tree_util.keystr(path)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    if leaf.ndim == 2 and leaf.shape[0] == TABLE_ROW_QUANTUM
  }
  tables = {
    jax.tree_util.keystr(path)
    for path, _ in jax.tree_util.tree_leaves_with_path(state)
    if is_table(path, recommender.tables)
  }
  assert padded == tables and len(tables) == 3 * len(SHARDED[name])  # each, its mu and nu
