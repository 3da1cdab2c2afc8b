"""From a trained run to recommendations: the best checkpoint, export, the API, TensorBoard,
progress lines."""

import json
import logging
import os
import pathlib
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignrec_jax import models
from alignrec_jax.data import ids as ids_lib
from alignrec_jax.errors import DataError
from alignrec_jax.evaluation import evaluate
from alignrec_jax.serving import QueryError, export, load_run
from alignrec_jax.training import epoch as epoch_lib
from alignrec_jax.training import reporting, stage2, stage2_setup
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(max_epochs=4, **train):
  config = test_config.get_config()
  config.train.max_epochs = max_epochs
  config.train.update(train)
  return config


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
  """A run that stops early (patience 1), its best epoch well before its last."""
  workdir = str(tmp_path_factory.mktemp("stopped"))
  config = _config(max_epochs=40, patience=1)
  config.optim.lr = 3e-2  # fast enough to peak early, and to stop soon after
  summary = stage2.train_and_evaluate(config, workdir)
  return workdir, summary


def test_the_best_checkpoint_outlives_the_early_stop(stopped_run):
  workdir, summary = stopped_run
  best = summary["best_epoch"]
  assert summary["epochs_run"] > best + 1, "the run must go on past its best epoch"
  assert summary["best_checkpoint"] == os.path.join(workdir, "checkpoints_best", str(best))
  assert os.listdir(os.path.join(workdir, "checkpoints_best")) == [str(best)]
  assert str(best) not in os.listdir(os.path.join(workdir, "checkpoints"))  # only the newest two
  # The best parameters give the metrics the run reported for that epoch, exactly.
  run = load_run(workdir)
  assert run.epoch == best
  exp = stage2_setup.build_experiment(run.config, workdir)
  results = evaluate(
    jnp.asarray(run.user_embeddings),
    jnp.asarray(run.item_embeddings),
    exp.eval_data,
    ks=tuple(run.config.eval.ks),
  )
  assert results["valid"] == summary["valid"] and results["test"] == summary["test"]


class Killed(BaseException):
  """Stands in for SIGKILL."""


@pytest.mark.slow
def test_a_resumed_run_keeps_the_right_best_checkpoint(tmp_path, monkeypatch, stopped_run):
  """Killed the epoch after its best one, before its checkpoint, and resumed from an older one
  (every 3rd epoch is kept): the same best epoch and parameters as without the kill."""
  workdir, summary = stopped_run
  best = summary["best_epoch"]
  config = _config(max_epochs=40, patience=1, checkpoint_every=3)
  config.optim.lr = 3e-2
  write = reporting.MetricsLog.write

  def killed(log, record):
    write(log, record)
    if record["epoch"] == best + 1:
      raise Killed

  with monkeypatch.context() as patch:
    patch.setattr(reporting.MetricsLog, "write", killed)
    with pytest.raises(Killed):
      stage2.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints_best") == [str(best)]
  again = stage2.train_and_evaluate(config, str(tmp_path))
  assert again["best_epoch"] == best and again["test"] == summary["test"]
  np.testing.assert_array_equal(
    load_run(workdir).user_embeddings, load_run(str(tmp_path)).user_embeddings
  )


def test_export_reproduces_the_metrics_and_the_ranking(tmp_path, stopped_run):
  workdir, summary = stopped_run
  run = load_run(workdir)
  record = export(run, str(tmp_path), k=10)
  users = np.load(tmp_path / "user_embeddings.npy")
  items = np.load(tmp_path / "item_embeddings.npy")
  assert users.dtype == items.dtype == np.float32
  exp = stage2_setup.build_experiment(run.config, workdir)
  assert evaluate(jnp.asarray(users), jnp.asarray(items), exp.eval_data)["test"] == summary["test"]
  # The table against a NumPy argsort with training items masked, ties to the lower id.
  lines = (tmp_path / "topk.tsv").read_text().splitlines()
  assert lines[0] == "user\trank\titem\tscore"
  table = np.array([line.split("\t") for line in lines[1:]], dtype=float)
  assert record["rows"] == len(table) == run.num_users * 10
  scores = users.astype(np.float64) @ items.astype(np.float64).T
  train = exp.dataset.train
  scores[train.users, train.items] = -np.inf
  for user in range(run.num_users):
    rows = table[table[:, 0] == user]
    order = np.lexsort((np.arange(run.num_items), -scores[user]))[:10]
    np.testing.assert_array_equal(rows[:, 1], np.arange(1, 11))
    np.testing.assert_allclose(
      rows[:, 3], scores[user, rows[:, 2].astype(int)], rtol=1e-5, atol=1e-6
    )
    # Items may swap only where their scores tie to float32 rounding.
    differ = rows[:, 2].astype(int) != order
    assert np.all(
      np.abs(scores[user, order[differ]] - scores[user, rows[differ, 2].astype(int)]) < 1e-5
    )
  pq = pytest.importorskip("pyarrow.parquet")
  parquet = pq.read_table(tmp_path / "topk.parquet").to_pydict()
  np.testing.assert_array_equal(parquet["item"], table[:, 2].astype(int))
  assert json.loads((tmp_path / "export.json").read_text())["epoch"] == run.epoch


def test_recommend_score_and_their_errors(stopped_run):
  run = load_run(stopped_run[0])
  items, scores = run.recommend([0, 5], k=4)
  assert items.shape == scores.shape == (2, 4) and np.all(np.diff(scores, axis=1) <= 0)
  np.testing.assert_allclose(run.score([0] * 4, items[0].tolist()), scores[0], rtol=1e-5)
  seen = run._train[1][run._train[0][0] : run._train[0][1]]  # user 0's training items
  assert not set(items[0]) & set(seen.tolist())
  with_seen, _ = run.recommend([0], k=run.num_items, exclude_seen=False)
  assert sorted(with_seen[0].tolist()) == list(range(run.num_items))
  left = run.num_items - len(seen)
  everything, last = run.recommend([0], k=run.num_items)
  assert np.all(everything[0, left:] == -1) and np.all(np.isneginf(last[0, left:]))
  with pytest.raises(QueryError, match=r"unknown user id\(s\) \[120\]: internal ids are 0..119"):
    run.recommend([120])
  with pytest.raises(QueryError, match="k must be in 1..80"):
    run.recommend([0], k=81)
  with pytest.raises(QueryError, match="wrap a single id in a list"):
    run.recommend(3)
  with pytest.raises(QueryError, match="2 users but 1 items"):
    run.score([0, 1], [2])


def _with_id_maps(folder: pathlib.Path, num_users: int, num_items: int) -> None:
  """Mapping files in MMRec's layout, rows shuffled, ids made of letters."""
  rng = np.random.default_rng(0)
  users = rng.permutation(num_users)
  (folder / ids_lib.USER_FILE).write_text(
    "user_id\tuserID\n" + "".join(f"U{u:03d}x\t{u}\n" for u in users)
  )
  items = rng.permutation(num_items)
  (folder / ids_lib.ITEM_FILE).write_text(
    "asin\titemID\ttitle\n" + "".join(f"B{i:05d}\t{i}\tItem {i}\n" for i in items)
  )


def test_the_dataset_own_ids_round_trip(tmp_path):
  config = _config(max_epochs=1)
  config.data.cache_dir = str(tmp_path / "data")
  workdir = str(tmp_path / "run")
  stage2.train_and_evaluate(config, workdir)
  folder = stage2_setup.dataset_folder(config.data, workdir)
  dataset = stage2_setup.load_dataset(config.data, workdir)
  _with_id_maps(pathlib.Path(folder), dataset.num_users, dataset.num_items)
  run = load_run(workdir)
  assert run.users.name == "user_id" and run.items.name == "asin"
  assert run.internal_users(["U007x", "U000x"]).tolist() == [7, 0]
  items, scores = run.recommend(["U007x"], k=3)
  internal, internal_scores = run.recommend([7], k=3, internal=True)
  assert items[0].tolist() == [f"B{i:05d}" for i in internal[0]]
  np.testing.assert_array_equal(scores, internal_scores)
  with pytest.raises(QueryError, match="'nobody' not in the dataset"):
    run.recommend(["nobody"])
  export(run, str(tmp_path / "out"), k=2)
  rows = (tmp_path / "out" / "topk.tsv").read_text().splitlines()
  assert rows[0] == "user\trank\titem\tscore\ttitle"
  user, rank, item, _, title = rows[1].split("\t")
  assert user == "U000x" and rank == "1" and title == f"Item {int(item[1:])}"


@pytest.mark.parametrize(
  "text, message",
  [
    ("asin\titemID\nB1\t0\nB2\t0\n", r"line 3: column itemID: id 0 appears a second time"),
    ("asin\titemID\nB1\t0\n", r"no row for itemID 1"),
    ("asin\titemID\nB1\t0\nB2\t5\n", r"line 3: column itemID: 5 is not an id"),
    ("asin\titem\nB1\t0\n", r"line 1 \(header\): expected a header naming itemID"),
  ],
)
def test_bad_mapping_files_name_the_line(tmp_path, text, message):
  path = tmp_path / ids_lib.ITEM_FILE
  path.write_text(text)
  with pytest.raises(DataError, match=message):
    ids_lib.read_id_map(path, internal="itemID", count=2)


@pytest.mark.slow
def test_the_export_launcher(tmp_path, stopped_run):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.export",
      f"--workdir={stopped_run[0]}",
      "--k=3",
      f"--out={tmp_path}",
      "--checkpoint=latest",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "exported epoch" in result.stdout
  record = json.loads((tmp_path / "export.json").read_text())
  assert record["epoch"] == stopped_run[1]["epochs_run"] - 1  # the newest checkpoint
  bad = subprocess.run(
    [sys.executable, "-m", "launch.export", f"--workdir={tmp_path}"],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 4 and "Traceback" not in bad.stderr
  assert "a trained stage-2 run?" in bad.stderr


def _events(folder: pathlib.Path) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in the event files of `folder`."""
  from tensorboardX.proto import event_pb2

  found = []
  for path in folder.glob("events.out.tfevents.*"):
    data, at = path.read_bytes(), 0
    while at < len(data):
      (size,) = struct.unpack("<Q", data[at : at + 8])
      event = event_pb2.Event.FromString(data[at + 12 : at + 12 + size])
      at += 12 + size + 4
      found += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  return found


@pytest.mark.slow
def test_tensorboard_gets_every_number_of_the_records(tmp_path):
  pytest.importorskip("tensorboardX")
  config = _config(max_epochs=2, tensorboard=True)
  stage2.train_and_evaluate(config, str(tmp_path))
  events = _events(tmp_path / "tensorboard")
  records = reporting.read_metrics(str(tmp_path))
  for record in records:
    for tag, value in record.items():
      if tag != "epoch":
        matches = [v for s, t, v in events if s == record["epoch"] and t == tag.replace("@", "_")]
        assert matches and matches[-1] == pytest.approx(value, rel=1e-6), tag


def test_long_epochs_print_progress(monkeypatch, caplog):
  caplog.set_level(logging.INFO, logger="absl")
  clock = iter([0.0, 0.0, 5.0, 12.0, 13.0, 30.0])  # init, start, then the four steps
  monkeypatch.setattr(reporting.time, "perf_counter", lambda: next(clock))
  progress = reporting.EpochProgress("stage 2", steps=10, examples_per_step=100)
  progress.start(3)  # t = 0
  for step in (1, 2, 3, 6):  # t = 5 (too early), 12 (prints), 13 (too soon), 30 (prints)
    progress(np.int32(step))
  lines = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
  assert lines == [
    "stage 2 epoch    3: step 2/10, 17 examples/s, 48 s left",
    "stage 2 epoch    3: step 6/10, 20 examples/s, 20 s left",
  ]


def test_the_epoch_calls_progress_once_a_step():
  seen = []

  def step(state, data, rows, real, key):
    return state + jnp.sum(jnp.where(real, data[rows], 0.0)), {"loss": jnp.float32(0)}

  epoch = epoch_lib.make_epoch(
    step, num_examples=10, batch_size=4, progress=lambda i: seen.append(int(i))
  )
  plain = epoch_lib.make_epoch(step, num_examples=10, batch_size=4)
  data = jnp.arange(10.0)
  total, _ = jax.block_until_ready(epoch(jnp.float32(0), data, jax.random.key(0)))
  assert sorted(seen) == [0, 1, 2] and float(total) == 45.0
  assert float(plain(jnp.float32(0), data, jax.random.key(0))[0]) == float(total)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(models.names()) - {"alignrec"}))  # AlignRec: above
def test_every_model_of_the_registry_loads_and_recommends(tmp_path, name):
  config = _config(max_epochs=1)
  config.model.name = name
  summary = stage2.train_and_evaluate(config, str(tmp_path))
  run = load_run(str(tmp_path))
  exp = stage2_setup.build_experiment(run.config, str(tmp_path))
  results = evaluate(
    jnp.asarray(run.user_embeddings),
    jnp.asarray(run.item_embeddings),
    exp.eval_data,
    ks=tuple(run.config.eval.ks),
  )
  assert results["test"] == summary["test"]
  assert run.recommend([0], k=3)[0].shape == (1, 3)
