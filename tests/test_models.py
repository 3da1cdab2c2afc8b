"""The stage-2 models (models/): each module and objective against a dense NumPy
re-implementation of the spec or of MMRec's code, and what the registry declares of them."""

import dataclasses
import importlib
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import numpy_reference as ref
import pytest

from alignrec_jax import graph as graph_lib
from alignrec_jax import models, schema
from alignrec_jax.data.dataset import Interactions
from alignrec_jax.errors import ConfigError
from alignrec_jax.models import Batch, alignrec, bpr, lightgcn, mgcn
from alignrec_jax.propagation import KERNELS, SparseOperator
from alignrec_jax.training import record, stage2
from configs import test as test_config

U, I, D_MM, DIM = 6, 8, 5, 4
PAIRS = np.array(
  [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (3, 0), (3, 4), (4, 5), (4, 6), (5, 7), (5, 2)], np.int32
)
FEATS = np.random.default_rng(0).normal(size=(I, D_MM)).astype(np.float32)
WEIGHTS = dict(l2_weight=1e-4, uia_weight=0.1, cl_weight=0.01, sim_weight=0.1, temperature=0.2)


def _graphs(kernel):
  train = Interactions(PAIRS[:, 0], PAIRS[:, 1])
  user_item = graph_lib.user_item_graph(train, num_users=U, num_items=I)
  knn = graph_lib.knn_graph(FEATS, k=3)
  block = graph_lib.user_rows(user_item, num_users=U)
  graphs = models.Graphs(
    user_item=SparseOperator.from_graph(user_item, kernel=kernel),
    user_item_block=SparseOperator.from_graph(block, shape=(U, I), kernel=kernel),
    item_knn=SparseOperator.from_graph(knn, kernel=kernel),
  )
  # The reference takes R_hat as A_hat's user rows, not from user_rows.
  return graphs, ref.dense(user_item), ref.dense(knn)


def _numpy_alignrec(p, a_hat, s, feats):
  x0 = p["ids"]["embedding"]
  e_i = x0[U:]
  c = (x0 + a_hat @ x0 + a_hat @ a_hat @ x0) / 3
  h = feats @ p["feature_proj"]["kernel"] + p["feature_proj"]["bias"]
  gate = ref.sigmoid(h @ p["content_gate"]["kernel"] + p["content_gate"]["bias"])
  m_i = s @ (e_i * gate)
  m_u = a_hat[:U, U:] @ m_i
  return c[:U] + m_u, c[U:] + m_i, m_u, m_i, c[:U], c[U:]


@pytest.mark.parametrize("kernel", KERNELS)
def test_alignrec_forward_matches_numpy(kernel):
  graphs, a_hat, s = _graphs(kernel)
  module = alignrec.AlignRec(num_users=U, num_items=I, embed_dim=DIM)
  params = module.init(jax.random.key(0), graphs, jnp.asarray(FEATS))["params"]
  emb = module.apply({"params": params}, graphs, jnp.asarray(FEATS))
  np_params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  expected = _numpy_alignrec(np_params, a_hat, s, FEATS)
  got = (*emb.final(), emb.content_users, emb.content_items, emb.ids[:U], emb.ids[U:])
  for g, e in zip(got, expected, strict=True):
    np.testing.assert_allclose(g, e, atol=1e-6)


def test_initialisation_matches_pytorch_defaults():
  graphs, _, _ = _graphs("csr")
  feats = jnp.ones((I, 768), jnp.float32)
  module = alignrec.AlignRec(num_users=U, num_items=I, embed_dim=64)
  params = module.init(jax.random.key(1), graphs, feats)["params"]
  table = np.abs(np.asarray(params["ids"]["embedding"]))
  for part, count in ((table[:U], U), (table[U:], I)):  # each part Xavier over its own shape
    bound = np.sqrt(6 / (count + 64))
    assert bound * 0.8 < part.max() <= bound
  for name, fan_in in (("feature_proj", 768), ("content_gate", 64)):
    for leaf in ("kernel", "bias"):
      values = np.abs(np.asarray(params[name][leaf]))
      assert values.max() <= 1 / np.sqrt(fan_in), (name, leaf)
      assert values.max() > 0.8 / np.sqrt(fan_in), (name, leaf)


def test_alignrec_objective_matches_the_reference_formula():
  graphs, a_hat, s = _graphs("csr")
  module, objective = models.build(_model_config(), num_users=U, num_items=I, batch_size=2048)
  assert module == alignrec.AlignRec(
    num_users=U, num_items=I, embed_dim=DIM, num_ui_layers=2, num_knn_layers=1
  )
  params = module.init(jax.random.key(0), graphs, jnp.asarray(FEATS))["params"]
  emb = module.apply({"params": params}, graphs, jnp.asarray(FEATS))
  users, pos, neg = np.array([0, 1, 3, 5]), np.array([1, 2, 4, 7]), np.array([6, 0, 1, 3])
  batch = Batch(
    users=jnp.asarray(users),
    pos_items=jnp.asarray(pos),
    neg_items=jnp.asarray(neg),
    mask=jnp.ones(4),
  )
  total, terms = objective(emb, jnp.asarray(FEATS), batch)
  # The objective with its weights bound is the plain one with the config's weights.
  direct = alignrec.objective(
    emb,
    jnp.asarray(FEATS),
    batch,
    weights=alignrec.Loss(**WEIGHTS),
    batch_size=2048,
    in_batch_groups=1,
  )
  assert jax.tree.map(float, direct) == jax.tree.map(float, (total, terms))

  zu_all, zi_all, m_u, m_i, c_u, c_i = _numpy_alignrec(
    jax.tree.map(lambda x: np.asarray(x, np.float64), params), a_hat, s, FEATS
  )
  zu, zp, zn = zu_all[users], zi_all[pos], zi_all[neg]
  bpr = -np.mean(np.log(ref.sigmoid((zu * zp).sum(1) - (zu * zn).sum(1))))
  l2 = 1e-4 * 0.5 * ((zu**2).sum() + (zp**2).sum() + (zn**2).sum()) / 2048
  uia = 0.1 * (1 - np.mean((ref.normalize(zu) * ref.normalize(zp)).sum(1)))
  cca = 0.01 * (ref.info_nce(m_i[pos], c_i[pos], 0.2) + ref.info_nce(m_u[users], c_u[users], 0.2))
  fn = ref.normalize(FEATS[pos].astype(np.float64))
  sim = 0.1 * np.linalg.norm(m_i[pos] @ m_i[pos].T - fn @ fn.T) / 4
  expected = dict(bpr=bpr, l2=l2, uia=uia, cca=cca, sim=sim)
  for name, value in expected.items():
    np.testing.assert_allclose(terms[name], value, rtol=2e-5, err_msg=name)
  np.testing.assert_allclose(total, sum(expected.values()), rtol=1e-5)


def _model_config(name="alignrec"):
  """A `config.model` group (configs/default.py's layout) at this file's sizes."""
  return ml_collections.ConfigDict(
    dict(
      name=name,
      kernel="csr",
      alignrec=dict(
        embed_dim=DIM,
        num_ui_layers=2,
        num_knn_layers=1,
        knn_k=3,
        knn_include_self=True,
        trainable_features=True,
        loss=dict(WEIGHTS),
      ),
      lightgcn=dict(embed_dim=DIM, num_ui_layers=2, loss=dict(reg_weight=1e-4)),
      bpr=dict(embed_dim=DIM, loss=dict(reg_weight=1e-3)),
      vbpr=dict(embed_dim=DIM, loss=dict(reg_weight=1e-2)),
      bm3=dict(
        embed_dim=DIM,
        num_ui_layers=1,
        trainable_features=True,
        loss=dict(dropout=0.0, reg_weight=0.1, cl_weight=2.0),
      ),
      freedom=dict(
        embed_dim=DIM,
        num_ui_layers=2,
        num_mm_layers=1,
        knn_k=3,
        image_weight=0.1,
        edge_dropout=0.8,
        trainable_features=True,
        loss=dict(reg_weight=0.5),
      ),
      mgcn=dict(
        embed_dim=DIM,
        num_ui_layers=2,
        num_mm_layers=1,
        knn_k=3,
        trainable_features=True,
        loss=dict(reg_weight=0.3, cl_weight=0.7, temperature=0.2),
      ),
    )
  )


def test_lightgcn_objective_matches_mmrec():
  graphs, a_hat, _ = _graphs("csr")
  module, objective = models.build(
    _model_config("lightgcn"), num_users=U, num_items=I, batch_size=2048
  )
  assert module == lightgcn.LightGCN(num_users=U, num_items=I, embed_dim=DIM, num_ui_layers=2)
  params = module.init(jax.random.key(2), graphs)["params"]
  emb = module.apply({"params": params}, graphs)
  users, pos, neg = np.array([0, 2, 4]), np.array([0, 3, 5]), np.array([7, 7, 1])
  mask = jnp.array([1.0, 1.0, 1.0, 0.0])  # the 4th row is padding
  batch = Batch(
    users=jnp.asarray(np.append(users, 1)),
    pos_items=jnp.asarray(np.append(pos, 2)),
    neg_items=jnp.asarray(np.append(neg, 3)),
    mask=mask,
  )
  total, _ = objective(emb, None, batch)
  x0 = np.asarray(params["ids"]["embedding"], np.float64)
  e_u, e_i = x0[:U], x0[U:]
  z = (x0 + a_hat @ x0 + a_hat @ a_hat @ x0) / 3
  zu, zp, zn = z[users], z[U + pos], z[U + neg]
  bpr = -np.mean(np.log(1e-10 + ref.sigmoid((zu * zp).sum(1) - (zu * zn).sum(1))))
  reg = (
    1e-4 * (np.linalg.norm(e_u[users]) + np.linalg.norm(e_i[pos]) + np.linalg.norm(e_i[neg])) / 3
  )
  np.testing.assert_allclose(total, bpr + reg, rtol=1e-5)


def test_every_model_declares_what_it_reads_and_what_it_shards():
  specs = {
    name: models.get(name)
    for name in ("alignrec", "bm3", "bpr", "freedom", "lightgcn", "mgcn", "vbpr")
  }
  assert {n for n, s in specs.items() if s.reads_content} == {
    "alignrec",
    "bm3",
    "freedom",
    "mgcn",
    "vbpr",
  }
  # BM3 reads its content in the loss only: it scores with ID embeddings.
  assert {n for n, s in specs.items() if s.content_in_scores} == {
    "alignrec",
    "freedom",
    "mgcn",
    "vbpr",
  }
  assert {n for n, s in specs.items() if s.content_in_loss} == {
    "alignrec",
    "bm3",
    "freedom",
    "mgcn",
  }
  assert {n for n, s in specs.items() if s.item_graph} == {"alignrec", "freedom", "mgcn"}
  assert {n for n, s in specs.items() if s.in_batch_terms} == {"alignrec", "mgcn"}
  assert {n for n, s in specs.items() if s.fine_tunes_features} == {
    "alignrec",
    "bm3",
    "freedom",
    "mgcn",
  }
  assert {n for n, s in specs.items() if s.prunes_graph} == {"freedom"}


def test_each_model_group_is_generated_from_its_file():
  group = models.get("alignrec").config_group()
  assert list(group.fields) == [
    "embed_dim",
    "num_ui_layers",
    "num_knn_layers",
    "trainable_features",
    "knn_k",
    "knn_include_self",
    "loss",
  ]
  assert group.fields["num_knn_layers"].default == alignrec.AlignRec.num_knn_layers
  assert list(group.fields["loss"].fields) == [f.name for f in dataclasses.fields(alignrec.Loss)]
  assert all(spec.help for _, spec in schema.walk(group))


def test_the_model_group_is_checked_field_by_field():
  config = test_config.get_config()
  stage2.check_config(config)
  config.model.name = "mf"
  with pytest.raises(ConfigError, match="unknown model 'mf'"):
    stage2.check_config(config)
  config = test_config.get_config()
  config.model.alignrec.loss = ml_collections.ConfigDict(  # l2_weight under another name
    {("reg_weight" if k == "l2_weight" else k): v for k, v in WEIGHTS.items()}
  )
  with pytest.raises(ConfigError, match="unknown field.*reg_weight.*missing field.*l2_weight"):
    stage2.check_config(config)
  config = test_config.get_config()
  config.model.freedom.edge_dropout = 1.0  # another model's group, present: checked too
  with pytest.raises(
    ConfigError, match=r"model.freedom.edge_dropout: expected a number in \[0, 1\)"
  ):
    stage2.check_config(config)
  config = test_config.get_config()
  with config.model.unlocked():
    del config.model["freedom"]  # absent: nothing reads it
  stage2.check_config(config)


def _mmrec_bpr_loss(zu, zp, zn, ego_rows, reg_weight):
  """MMRec's BPRLoss + reg_weight * EmbLoss, in float64: the known answer of the baselines."""
  bpr = -np.mean(np.log(1e-10 + ref.sigmoid((zu * zp).sum(1) - (zu * zn).sum(1))))
  return bpr + reg_weight * sum(np.linalg.norm(r) for r in ego_rows) / len(zu)


BATCH = Batch(
  users=jnp.array([0, 2, 4, 1]),
  pos_items=jnp.array([0, 3, 5, 2]),
  neg_items=jnp.array([7, 7, 1, 3]),
  mask=jnp.array([1.0, 1.0, 1.0, 0.0]),  # the 4th row is padding
)


def test_bpr_mf_scores_id_dot_products_and_trains_mmrec_loss():
  graphs, _, _ = _graphs("csr")
  module, objective = models.build(_model_config("bpr"), num_users=U, num_items=I, batch_size=2048)
  assert module == bpr.MatrixFactorization(num_users=U, num_items=I, embed_dim=DIM)
  params = module.init(jax.random.key(3), graphs)["params"]
  emb = module.apply({"params": params}, graphs)
  table = np.asarray(params["embedding"], np.float64)
  users, items = emb.final()
  np.testing.assert_array_equal(users, table[:U])
  np.testing.assert_array_equal(items, table[U:])
  # Xavier-normal over each table's own shape, as MMRec's two nn.Embedding.
  assert abs(np.std(table[:U]) - np.sqrt(2 / (U + DIM))) < 0.5 * np.sqrt(2 / (U + DIM))
  u, p, n = (np.asarray(x)[:3] for x in (BATCH.users, BATCH.pos_items, BATCH.neg_items))
  zu, zp, zn = table[u], table[U + p], table[U + n]
  total, terms = objective(emb, None, BATCH)
  np.testing.assert_allclose(total, _mmrec_bpr_loss(zu, zp, zn, (zu, zp, zn), 1e-3), rtol=1e-5)
  assert set(terms) == {"bpr", "reg"}


def test_vbpr_puts_projected_content_beside_the_id_and_trains_mmrec_loss():
  graphs, _, _ = _graphs("csr")
  module, objective = models.build(_model_config("vbpr"), num_users=U, num_items=I, batch_size=2048)
  feats = jnp.asarray(FEATS)
  params = module.init(jax.random.key(4), graphs, feats)["params"]
  emb = module.apply({"params": params}, graphs, feats)
  p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  users = p64["user_embedding"]
  items = np.concatenate(
    [
      p64["item_embedding"],
      FEATS @ p64["feature_proj"]["kernel"] + p64["feature_proj"]["bias"],
    ],
    axis=1,
  )
  assert users.shape == (U, 2 * DIM) and items.shape == (I, 2 * DIM)
  got_users, got_items = emb.final()
  np.testing.assert_allclose(got_users, users, rtol=1e-6)
  np.testing.assert_allclose(got_items, items, rtol=1e-5, atol=1e-6)
  assert not np.any(p64["feature_proj"]["bias"])  # MMRec: Linear bias zero, weight Xavier-normal
  u, p, n = (np.asarray(x)[:3] for x in (BATCH.users, BATCH.pos_items, BATCH.neg_items))
  zu, zp, zn = users[u], items[p], items[n]
  total, _ = objective(emb, feats, BATCH)
  # VBPR regularises its final rows, the content part included.
  np.testing.assert_allclose(total, _mmrec_bpr_loss(zu, zp, zn, (zu, zp, zn), 1e-2), rtol=1e-5)


def test_freedom_forward_and_loss_match_numpy():
  """z_u = LightGCN_u, z_i = LightGCN_i + S e_i (S: the frozen mixed graph); the loss is BPR
  plus reg_weight x each modality's BPR against its projected features."""
  graphs, a_hat, _ = _graphs("csr")
  image, text = FEATS[:, :3], FEATS[:, 3:]
  item_graph = graph_lib.mixed_knn_graph([image, text], [0.1, 0.9], k=3)
  graphs = models.Graphs(
    user_item=graphs.user_item,
    item_knn=SparseOperator.from_graph(item_graph, kernel="csr"),
  )
  module, objective = models.build(
    _model_config("freedom"), num_users=U, num_items=I, batch_size=2048, feature_dims=(3, 2)
  )
  feats = jnp.asarray(FEATS)
  params = module.init(jax.random.key(5), graphs, feats)["params"]
  emb = module.apply({"params": params}, graphs, feats)
  p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  x0 = p64["ids"]["embedding"]
  lightgcn = (x0 + a_hat @ x0 + a_hat @ a_hat @ x0) / 3
  users, items = lightgcn[:U], lightgcn[U:] + ref.dense(item_graph) @ x0[U:]
  got_users, got_items = emb.final()
  np.testing.assert_allclose(got_users, users, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_items, items, rtol=1e-5, atol=1e-6)
  projected = [
    part @ p64[f"modality_{m}"]["kernel"] + p64[f"modality_{m}"]["bias"]
    for m, part in enumerate((image, text))
  ]
  u, p, n = (np.asarray(x)[:3] for x in (BATCH.users, BATCH.pos_items, BATCH.neg_items))

  def bpr(pos_rows, neg_rows):
    zu = users[u]
    return -np.mean(np.log(ref.sigmoid((zu * pos_rows).sum(1) - (zu * neg_rows).sum(1))))

  expected = bpr(items[p], items[n]) + 0.5 * sum(bpr(m[p], m[n]) for m in projected)
  total, terms = objective(emb, feats, BATCH)
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert set(terms) == {"bpr", "modality_bpr"}


def test_bm3_forward_and_loss_match_numpy():
  """Targets: LightGCN (+ the item's own ID row); online views and scores: one predictor head;
  the loss: 1 - cos of online against target for users, items and each modality, EmbLoss over
  the whole target tables / I, all checked with dropout 0; dropout then draws from the key."""
  graphs, a_hat, _ = _graphs("csr")
  config = _model_config("bm3")
  module, objective = models.build(
    config, num_users=U, num_items=I, batch_size=2048, feature_dims=(3, 2)
  )
  feats = jnp.asarray(FEATS)
  params = module.init(jax.random.key(6), graphs, feats)["params"]
  emb = module.apply({"params": params}, graphs, feats)
  p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  x0 = p64["ids"]["embedding"]
  targets = (x0 + a_hat @ x0) / 2
  targets[U:] += x0[U:]

  def head(x):
    return x @ p64["predictor"]["kernel"] + p64["predictor"]["bias"]

  online = head(targets)
  projections = [
    part @ p64[f"modality_{m}"]["kernel"] + p64[f"modality_{m}"]["bias"]
    for m, part in enumerate((FEATS[:, :3], FEATS[:, 3:]))
  ]
  np.testing.assert_allclose(emb.targets, targets, rtol=1e-5, atol=1e-6)
  users_z, items_z = emb.final()
  np.testing.assert_allclose(users_z, online[:U], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(items_z, online[U:], rtol=1e-5, atol=1e-6)

  def cos_loss(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1 - np.mean((a * b).sum(1))

  u, p = np.asarray(BATCH.users)[:3], np.asarray(BATCH.pos_items)[:3]
  item_t = targets[U + p]
  expected = (
    cos_loss(online[u], item_t)
    + cos_loss(online[U + p], targets[u])
    + 0.1 * (np.linalg.norm(targets[:U]) + np.linalg.norm(targets[U:])) / I
    + 2.0
    * sum(
      cos_loss(head(proj)[p], item_t) + cos_loss(head(proj)[p], proj[p]) for proj in projections
    )
  )
  batch = dataclasses.replace(BATCH, key=jax.random.key(0))
  total, terms = objective(emb, feats, batch)
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert set(terms) == {"ui", "reg", "modality"}
  config.bm3.loss.dropout = 0.5
  _, dropped = models.build(config, num_users=U, num_items=I, batch_size=2048, feature_dims=(3, 2))
  first, again = dropped(emb, feats, batch)[0], dropped(emb, feats, batch)[0]
  other = dropped(emb, feats, dataclasses.replace(batch, key=jax.random.key(1)))[0]
  assert first == again and first != other and first != total


def _numpy_mgcn_knn(x, k):
  """MMRec's build_knn_normalized_graph(build_sim(x), k, sym), dense: each row's top k cosines
  (itself included) kept as weights, D^-1/2 S D^-1/2 with D the kept row sums."""
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  sim = unit @ unit.T
  kept = np.zeros_like(sim)
  for i, row in enumerate(sim):
    top = np.argsort(-row)[:k]
    kept[i, top] = row[top]
  inv = kept.sum(1) ** -0.5
  return inv[:, None] * kept * inv[None, :]


def test_mgcn_forward_and_loss_match_mmrec_written_in_numpy():
  """MMRec's MGCN.forward and calculate_loss, line for line in float64 NumPy (two modalities:
  image = the first feature columns, text = the rest)."""
  graphs, a_hat, _ = _graphs("csr")
  image, text = FEATS[:, :3].astype(np.float64), FEATS[:, 3:].astype(np.float64)
  item_graph = mgcn.item_graph(ml_collections.ConfigDict(dict(knn_k=3)), [image, text], None)
  s_image, s_text = _numpy_mgcn_knn(image, 3), _numpy_mgcn_knn(text, 3)
  np.testing.assert_allclose(ref.dense(item_graph)[:I, :I], s_image, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ref.dense(item_graph)[I:, I:], s_text, rtol=1e-5, atol=1e-7)
  assert not ref.dense(item_graph)[:I, I:].any() and not ref.dense(item_graph)[I:, :I].any()
  graphs = dataclasses.replace(graphs, item_knn=SparseOperator.from_graph(item_graph, kernel="csr"))
  module, objective = models.build(
    _model_config("mgcn"), num_users=U, num_items=I, batch_size=2048, feature_dims=(3, 2)
  )
  feats = jnp.asarray(FEATS)
  params = module.init(jax.random.key(6), graphs, feats)["params"]
  emb = module.apply({"params": params}, graphs, feats)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)

  def linear(name, x):
    return x @ p[name]["kernel"] + p[name].get("bias", 0.0)

  x0 = p["ids"]["embedding"]
  content = (x0 + a_hat @ x0 + a_hat @ a_hat @ x0) / 3
  r_hat = a_hat[:U, U:]
  views = []
  for m, (part, s) in enumerate(((image, s_image), (text, s_text))):
    item_embeds = x0[U:] * ref.sigmoid(linear(f"purifier_{m}", linear(f"modality_{m}", part)))
    item_embeds = s @ item_embeds
    views.append(np.concatenate([r_hat @ item_embeds, item_embeds]))

  def query(v):
    return linear("query_out", np.tanh(linear("query_hidden", v)))

  att = np.concatenate([query(v) for v in views], axis=1)
  att = np.exp(att) / np.exp(att).sum(1, keepdims=True)
  common = att[:, :1] * views[0] + att[:, 1:] * views[1]
  sep = [ref.sigmoid(linear(f"prefer_{m}", content)) * (v - common) for m, v in enumerate(views)]
  side = (sep[0] + sep[1] + common) / 3
  final = content + side
  got_users, got_items = emb.final()
  np.testing.assert_allclose(got_users, final[:U], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_items, final[U:], rtol=1e-5, atol=1e-6)

  u, pos, neg = (np.asarray(x)[:3] for x in (BATCH.users, BATCH.pos_items, BATCH.neg_items))
  zu, zp, zn = final[u], final[U + pos], final[U + neg]
  mf = -np.mean(np.log(ref.sigmoid((zu * zp).sum(1) - (zu * zn).sum(1))))
  emb_loss = 0.3 * 0.5 * ((zu**2).sum() + (zp**2).sum() + (zn**2).sum()) / 2048

  def info_nce(view1, view2):
    view1 = view1 / np.linalg.norm(view1, axis=1, keepdims=True)
    view2 = view2 / np.linalg.norm(view2, axis=1, keepdims=True)
    pos_score = np.exp((view1 * view2).sum(1) / 0.2)
    total = np.exp(view1 @ view2.T / 0.2).sum(1)
    return np.mean(-np.log(pos_score / total))

  cl = info_nce(side[U + pos], content[U + pos]) + info_nce(side[u], content[u])
  total, terms = objective(emb, feats, BATCH)
  np.testing.assert_allclose(total, mf + emb_loss + 0.7 * cl, rtol=1e-5)
  assert set(terms) == {"bpr", "l2", "cl"}


def test_a_model_registered_from_a_test_module_trains_through_the_launcher(tmp_path, monkeypatch):
  """A model file of its own, imported before the config is read, is all a new model needs:
  its config group is generated from its file, and launch.train's main trains it."""
  importlib.import_module("toy_model")  # registers "toy"
  from absl import flags

  from launch import train

  config_file = pathlib.Path(__file__).resolve().parents[1] / "configs" / "test.py"
  argv = [
    "launch.train",
    f"--config={config_file}",
    "--config.model.name=toy",
    "--config.model.toy.embed_dim=4",
    "--config.train.max_epochs=2",
    f"--config.data.cache_dir={tmp_path / 'data'}",
    f"--workdir={tmp_path / 'run'}",
  ]
  monkeypatch.setattr(sys, "argv", argv)  # where ml_collections reads the --config.* overrides
  flags.FLAGS(argv)
  try:
    train.main([])
  finally:
    flags.FLAGS.unparse_flags()
  summary = record.read_summary(str(tmp_path / "run"))
  assert summary["epochs_run"] == 2 and 0 < summary["test"]["recall@20"] <= 1
  assert summary["identity"]["config"]["model.toy.embed_dim"] == 4
  assert summary["identity"]["config"]["model.toy.loss.reg_weight"] == 1e-3
  assert "model.alignrec.embed_dim" not in summary["identity"]["config"]
