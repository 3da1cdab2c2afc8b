"""Stage 2 on tiny data: one compile per epoch, the models train, the config is checked."""

import json
import os

import jax
import numpy as np
import pytest

from alignrec_jax.evaluation import shortest_history_users
from alignrec_jax.training import stage2, stage2_setup
from alignrec_jax.training.checkpoint import Checkpointer
from configs import test as test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params_of_last_checkpoint(workdir):
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  epoch = checkpointer.latest_epoch()
  # Restore without a target gives plain nested dicts of arrays: enough to compare bit for bit.
  import orbax.checkpoint as ocp

  path = os.path.join(workdir, "checkpoints", str(epoch), "state")
  state = ocp.StandardCheckpointer().restore(path)
  checkpointer.close()
  return epoch, state["params"]


def _assert_trees_equal(a, b):
  flat_a, tree_a = jax.tree.flatten(a)
  flat_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(flat_a, flat_b, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _config(**train):
  config = test_config.get_config()
  config.train.update(train)
  return config


def test_epoch_compiles_once_and_keeps_params_finite(tmp_path):
  config = _config()
  exp = stage2_setup.build_experiment(config, str(tmp_path))
  n_train = len(exp.dataset.train)
  assert n_train % config.train.batch_size != 0, "the tiny data must exercise a partial batch"
  recommender = stage2.build_recommender(config, exp)
  state = recommender.init_state(jax.random.key(0), exp.train_data)
  epoch_fn = recommender.make_train_epoch()
  for epoch in range(2):
    state, terms = epoch_fn(state, exp.train_data, jax.random.key(epoch))
  assert epoch_fn._cache_size() == 1
  assert int(state.step) == 2 * -(-n_train // config.train.batch_size)
  assert all(np.isfinite(float(v)) and float(v) >= 0 for v in terms.values())
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
  # The features are fine-tuned (the reference's behaviour) unless switched off.
  assert not np.allclose(state.params["features"], exp.train_data.features)


def test_frozen_features_are_not_parameters(tmp_path):
  config = _config()
  config.model.alignrec.trainable_features = False
  exp = stage2_setup.build_experiment(config, str(tmp_path))
  state = stage2.build_recommender(config, exp).init_state(jax.random.key(0), exp.train_data)
  assert set(state.params) == {"net"}


def test_lightgcn_trains(tmp_path):
  config = _config(max_epochs=2)
  config.model.name = "lightgcn"
  summary = stage2.train_and_evaluate(config, str(tmp_path))
  assert summary["epochs_run"] == 2 and 0 < summary["test"]["recall@20"] <= 1


def test_freedom_trains_each_epoch_on_a_fresh_pruned_graph_and_scores_on_the_whole(tmp_path):
  config = _config(max_epochs=2)
  config.model.name = "freedom"
  config.model.freedom.knn_k = 3
  exp = stage2_setup.build_experiment(config, str(tmp_path))
  recommender = stage2.build_recommender(config, exp)
  n_train = len(exp.dataset.train)
  assert recommender.edge_keep == int(n_train * 0.2)
  prune = jax.jit(recommender.prepare_epoch)
  first = prune(exp.train_data, jax.random.key(0)).graphs.user_item
  again = prune(exp.train_data, jax.random.key(0)).graphs.user_item
  other = prune(exp.train_data, jax.random.key(1)).graphs.user_item
  assert first.graph.edges.shape == (2 * recommender.edge_keep,)
  np.testing.assert_array_equal(first.graph.senders, again.graph.senders)
  assert not np.array_equal(first.graph.senders, other.graph.senders)
  # The kept edges are training pairs, each once.
  users, items = np.asarray(first.graph.receivers), np.asarray(first.graph.senders)
  to_items = users < exp.dataset.num_users
  kept = set(zip(users[to_items], items[to_items] - exp.dataset.num_users, strict=True))
  train = set(zip(exp.dataset.train.users, exp.dataset.train.items, strict=True))
  assert len(kept) == recommender.edge_keep and kept <= train
  summary = stage2.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["epochs_run"] == 2 and 0 < summary["test"]["recall@20"] <= 1
  # Without pruning there is nothing to prepare: the epoch is every other model's.
  config.model.freedom.edge_dropout = 0.0
  assert stage2.build_recommender(config, exp).prepare_epoch is None


def test_short_history_users_are_reported_at_the_best_epoch(tmp_path):
  config = _config(max_epochs=2)
  summary = stage2.train_and_evaluate(config, str(tmp_path))
  exp = stage2_setup.build_experiment(config, str(tmp_path))
  users = shortest_history_users(exp.dataset, 0.2)
  for split in ("valid", "test"):
    heldout = exp.dataset.split(split)
    expected = len(np.intersect1d(np.unique(heldout.users), users))
    assert summary[f"{split}_short"]["num_users"] == expected < summary[split]["num_users"]
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert "valid_short/recall@20" in records[0]  # the first epoch always improves


def test_a_field_nothing_reads_is_an_error_naming_it(tmp_path):
  from alignrec_jax.errors import ConfigError

  config = _config()
  config.model.alignrec.loss.cl_wieght = 0.1  # a typo in a config file adds a field
  with pytest.raises(
    ConfigError,
    match=r"config\.model\.alignrec\.loss: unknown field\(s\) "
    r"cl_wieght",
  ):
    stage2.train_and_evaluate(config, str(tmp_path))
  config = _config()
  config.model.lightgcn.knn_k = 5  # LightGCN builds no kNN graph
  config.model.name = "lightgcn"
  with pytest.raises(ConfigError, match=r"config\.model\.lightgcn: unknown field\(s\) knn_k"):
    stage2.train_and_evaluate(config, str(tmp_path))
  config = _config()
  config.model.name = "lightgnc"
  with pytest.raises(ConfigError, match="unknown model 'lightgnc'"):
    stage2.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path), "nothing is built or written for a bad config"
