"""Run by tests/test_parallel.py in a process of its own with 4 fake CPU devices: both stages
on sub-meshes of 1, 2 and 4 devices, stage 2 with its in-batch terms in 2 groups on 1 and 2
devices and with its tables split by rows (on 4, and resumed from 2 on 4), evaluation with the
users split over sub-meshes and propagation with the graphs' rows split over them; prints a
JSON line of what the test compares."""

import json
import sys

import jax
import numpy as np
from jax.sharding import Mesh
from test_ranking import _random_dataset  # run as a script: the tests' folder is on the path

from alignrec_jax import graph as graph_lib
from alignrec_jax.data import content as content_lib
from alignrec_jax.data.dataset import Interactions
from alignrec_jax.errors import ConfigError
from alignrec_jax.evaluation.index import make_eval_data
from alignrec_jax.evaluation.ranking import METHODS, evaluate
from alignrec_jax.propagation import PartitionedOperator, SparseOperator, lightgcn, propagate
from alignrec_jax.serving import load_run
from alignrec_jax.training import stage1, stage2, stage2_setup
from alignrec_jax.training.parallel import make_parallel
from configs import test as test_config


def main(root: str) -> None:
  assert jax.device_count() == 4, jax.devices()
  out = {"stage2": {}, "stage1": {}}
  for count in (1, 2, 4):
    config = test_config.get_config()
    config.train.max_epochs = 2
    config.parallel.num_devices = count
    config.data.cache_dir = f"{root}/data"
    summary = stage2.train_and_evaluate(config, f"{root}/stage2_{count}")
    run = load_run(f"{root}/stage2_{count}", "latest")
    np.save(f"{root}/users_{count}.npy", run.user_embeddings)
    out["stage2"][count] = summary["test"]
    folder = stage2_setup.dataset_folder(config.data, f"{root}/stage2_{count}")
    num_items = stage2_setup.load_dataset(config.data, f"{root}/stage2_{count}").num_items
    loaded = content_lib.load_content(
      folder,
      config.stage1.data.modalities,
      num_items=num_items,
      vector_tokens=config.stage1.model.vector_tokens,
    )
    path = stage1.run_stage1(
      config.stage1,
      folder,
      f"{root}/stage1_{count}",
      num_items=num_items,
      seed=0,
      content=loaded,
      parallel=make_parallel(config.parallel),
    )
    np.save(f"{root}/features_{count}.npy", np.load(path))
  # The in-batch terms per device (train.in_batch_groups = 2): on 2 devices each computes its
  # own slice's terms; on 1 device the same slices, one after the other.
  for count in (1, 2):
    config = test_config.get_config()
    config.train.max_epochs = 2
    config.train.in_batch_groups = 2
    config.parallel.num_devices = count
    config.data.cache_dir = f"{root}/data"
    stage2.train_and_evaluate(config, f"{root}/grouped_{count}")
    run = load_run(f"{root}/grouped_{count}", "latest")
    np.save(f"{root}/grouped_users_{count}.npy", run.user_embeddings)
  # The tables split by rows (parallel.shard_tables): 2 epochs on 4 devices, and a run of 1
  # epoch on 2 devices resumed to 2 on 4 (the padded checkpoint fits either mesh).
  for name, steps in (("sharded", ((4, 2),)), ("sharded_resumed", ((2, 1), (4, 2)))):
    for count, epochs in steps:
      config = test_config.get_config()
      config.train.max_epochs = epochs
      config.parallel.num_devices = count
      config.parallel.shard_tables = True
      config.data.cache_dir = f"{root}/data"
      stage2.train_and_evaluate(config, f"{root}/{name}")
    np.save(f"{root}/{name}_users.npy", load_run(f"{root}/{name}", "latest").user_embeddings)
  out["epochs_keep_their_layout"] = _epochs_keep_their_layout(f"{root}/layout")
  out["table_rows_per_device"] = _table_rows_per_device(f"{root}/layout")
  config = test_config.get_config()
  config.parallel.num_devices, config.parallel.shard_tables = 3, True
  try:
    stage2.check_config(config)
  except ConfigError as e:
    out["three_devices_refused"] = str(e)
  out["evaluation"] = _evaluation_on_sub_meshes()
  out["partitioned_propagation"] = _partitioned_propagation_error()
  print(json.dumps(out))


def _epochs_keep_their_layout(workdir: str) -> bool:
  """Whether an epoch compiled ahead of time on 2 devices accepts the state it returns: its
  outputs keep the inputs' layout (replicated, or tables split by rows) instead of one XLA
  picked."""
  for shard_tables in (False, True):
    config = test_config.get_config()
    config.parallel.num_devices = 2
    config.parallel.shard_tables = shard_tables
    config.data.cache_dir = f"{workdir}/data"
    exp = stage2_setup.build_experiment(config, workdir)
    recommender = stage2.build_recommender(config, exp)
    state = recommender.init_state(jax.random.key(0), exp.train_data)
    key = jax.random.key(1)
    epoch = recommender.make_train_epoch().lower(state, exp.train_data, key).compile()
    for _ in range(2):  # the second call raises if the first returned another layout
      state, _ = epoch(state, exp.train_data, key)
  return True


def _table_rows_per_device(workdir: str) -> dict[str, list[int]]:
  """Each 2-D state leaf's rows on one device with the tables split over 4 devices."""
  config = test_config.get_config()
  config.parallel.num_devices = 4
  config.parallel.shard_tables = True
  config.data.cache_dir = f"{workdir}/data"
  exp = stage2_setup.build_experiment(config, workdir)
  state = stage2.build_recommender(config, exp).init_state(jax.random.key(0), exp.train_data)
  return {
    jax.tree_util.keystr(path): [leaf.shape[0], leaf.addressable_shards[0].data.shape[0]]
    for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    if leaf.ndim == 2
  }


def _partitioned_propagation_error() -> float:
  """The largest difference between LightGCN (value and gradient) and the rectangular R_hat
  product over the graphs' rows split across 2, 3 and 4 devices and over one device."""
  rng = np.random.default_rng(0)
  pairs = np.unique(np.stack([rng.integers(0, 30, 200), rng.integers(0, 17, 200)], 1), axis=0)
  train = Interactions(pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32))
  graph = graph_lib.user_item_graph(train, num_users=30, num_items=17)
  block = graph_lib.user_rows(graph, num_users=30)
  x = jax.numpy.asarray(rng.normal(size=(47, 5)), np.float32)

  def loss(op, x):
    return jax.numpy.sum(jax.numpy.sin(lightgcn(op, x, num_layers=2)))

  want = jax.value_and_grad(loss, argnums=1)(SparseOperator.from_graph(graph), x)
  want_block = propagate(SparseOperator.from_graph(block, shape=(30, 17)), x[30:])
  error = 0.0
  for count in (2, 3, 4):
    mesh = Mesh(np.array(jax.devices()[:count]), ("data",))
    got = jax.jit(jax.value_and_grad(loss, argnums=1))(
      PartitionedOperator.from_graph(graph, mesh), x
    )
    got_block = propagate(PartitionedOperator.from_graph(block, mesh, shape=(30, 17)), x[30:])
    for a, b in ((got[0], want[0]), (got[1], want[1]), (got_block, want_block)):
      error = max(error, float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))
  return error


def _evaluation_on_sub_meshes() -> dict[str, bool]:
  """Whether evaluation with the users split over 2, 3 and 4 devices (6 chunks: 3 devices
  take 2 each, 4 leave padding) gives the one-device metrics exactly, for both methods."""
  rng = np.random.default_rng(0)
  dataset = _random_dataset(rng, 53, 40)
  users = rng.normal(size=(53, 6)).astype(np.float32)
  items = rng.normal(size=(40, 6)).astype(np.float32)
  data = make_eval_data(dataset, chunk_size=8)
  assert data.num_chunks == 6
  equal = {}
  for method in METHODS:
    one = evaluate(users, items, data, ks=(1, 5, 20), method=method)
    for count in (2, 3, 4):
      mesh = Mesh(np.array(jax.devices()[:count]), ("data",))
      got = evaluate(users, items, data, ks=(1, 5, 20), method=method, mesh=mesh)
      equal[f"{method}_{count}"] = got == one
  return equal


if __name__ == "__main__":
  main(sys.argv[1])
