"""The one optimiser builder: the chains it makes equal optax's own, and nothing that is off."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignrec_jax.errors import ConfigError
from alignrec_jax.training.optimizer import learning_rate, make_optimizer
from configs import default


def _updates(tx, steps=4):
  """The updates of `steps` steps on fixed random gradients of a small parameter tree."""
  keys = jax.random.split(jax.random.key(0), steps + 1)
  params = {"a": jax.random.normal(keys[0], (3, 4)), "b": {"c": jnp.arange(5.0)}}
  state = tx.init(params)
  out = []
  for key in keys[1:]:
    grads = jax.tree.map(lambda p, k=key: 10.0 * jax.random.normal(k, p.shape), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_stage2_chain_is_the_reference_adam_with_its_epoch_decay():
  config = default.get_config().optim
  tx = make_optimizer(config, steps_per_epoch=2, num_epochs=10)

  def schedule(count):
    return 1e-3 * 0.96 ** ((count // 2).astype(jnp.float32) / 50.0)

  _assert_same(_updates(tx), _updates(optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8)))
  # Nothing that is off is added: no clipping, no weight decay, just Adam and the rate.
  assert len(tx.init({"a": jnp.zeros(2)})) == 2


def test_stage1_chain_is_clipped_adamw_with_warmup_and_cosine():
  config = default.get_config().stage1.optim
  tx = make_optimizer(config, steps_per_epoch=3, num_epochs=4)
  schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, warmup_steps=6, decay_steps=12)
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.05))
  _assert_same(_updates(tx, steps=8), _updates(reference, steps=8))


def test_schedules_are_functions_of_the_step():
  config = default.get_config().optim
  rate = learning_rate(config, steps_per_epoch=10, num_epochs=100)
  assert float(rate(jnp.int32(9))) == pytest.approx(1e-3)
  assert float(rate(jnp.int32(500))) == pytest.approx(1e-3 * 0.96)  # epoch 50
  config.schedule, config.lr_decay = "constant", 1.0
  assert learning_rate(config, steps_per_epoch=10, num_epochs=100) == 1e-3


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("lr", -1.0, "expected a number > 0, got -1.0"),
    ("weight_decay", 0.1, "needs name 'adamw'"),
    ("warmup_epochs", 2, "no effect with schedule 'epoch_decay'"),
    ("name", "sgd", "expected one of adam, adamw, got 'sgd'"),
    ("schedule", "linear", "expected one of epoch_decay, warmup_cosine, constant, got 'linear'"),
  ],
)
def test_bad_settings_name_the_field(field, value, message):
  config = default.get_config().optim
  config[field] = value
  with pytest.raises(ConfigError, match=message) as info:
    make_optimizer(config, steps_per_epoch=1, num_epochs=1)
  assert f"config.optim.{field}" in str(info.value)


def test_an_unknown_field_is_an_error():
  config = default.get_config().optim
  config.unlock()
  config.momentum = 0.9
  with pytest.raises(ConfigError, match=r"config\.optim: unknown field\(s\) momentum"):
    make_optimizer(config, steps_per_epoch=1, num_epochs=1)
