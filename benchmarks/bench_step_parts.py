r"""Where a stage-2 step's time goes: each part timed alone, against this machine's roofline.

  python -m benchmarks.bench_step_parts                 # configs/baby_graph.py, this machine
  python -m benchmarks.bench_step_parts --output=benchmarks/results/step_parts_cpu.jsonl
  python -m benchmarks.bench_step_parts --shape=electronics --timed_epochs=0  # Electronics' shape

At Amazon-Baby scale (the data and settings of `bench_train.py`), each part of AlignRec's training
step is run alone, forward and backward where it has one, `iterations` times inside one jitted
loop (so that, as in the scanned epoch, buffers are allocated once per program), and timed:
median of `repeats` such programs after a warm-up, `block_until_ready`, divided by `iterations`.

  info_nce     the two content-category InfoNCE terms (B x B logits over 64-d rows)
  similarity   the similarity-preservation term in Gram form (B x 768 features)
  projection   h = F W for all items and both of its gradients (F is fine-tuned)
  adam_f       optax's Adam update of the I x 768 feature table F, applied
  propagation  LightGCN over A_hat (2 layers), the kNN layer S and the users' R_hat
  step         the whole training step (sampling, all of the above, every Adam update), timed
               as the median scanned epoch (`bench_train.py`'s) over its steps

Beside each: XLA's FLOPs and bytes for it, and its roofline time, FLOPs at the machine's measured
matmul rate plus bytes at its measured streaming bandwidth (both probed here first), i.e. the time
if nothing overlapped and every product and pass ran at the machine's best. The parts do not sum to
the step exactly: inside one program XLA runs independent parts concurrently, and the step also
gathers rows, samples negatives, copies F once (its update cannot be in place while the weight
gradient still reads it) and updates the small parameters. Bytes are XLA's operand and output
sizes: data that stays in cache counts as if it came from memory, so a roofline over these bytes
is pessimistic where working sets fit in the 32 MiB L3 (the B x B logits do).
"""

import statistics

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.objectives import losses
from alignrec_jax.propagation import lightgcn, propagate
from alignrec_jax.training import stage2, stage2_setup
from benchmarks import machine, scale_data, timing

_CONFIG = config_flags.DEFINE_config_file("config", "configs/baby_graph.py", "Config.")
_ITERATIONS = flags.DEFINE_integer("iterations", 10, "Calls of a part inside one timed program.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed programs after the warm-up, per part.")
_EPOCHS = flags.DEFINE_integer(
  "timed_epochs", 3, "Epochs timed for the whole step (0: time the parts only)."
)
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/alignrec_bench", "Scratch (synthetic data).")
_SHAPE = scale_data.define_shape_flag()


def machine_roofline(repeats: int) -> dict[str, float]:
  """This machine's float32 matmul rate (GFLOP/s) and streaming bandwidth (GB/s), measured.

  The matmul is 2048 x 2048 x 2048 (the size class of the step's largest products); the stream
  is sum(x * y) over two 64 MiB arrays (twice the L3 cache of these machines), a pure read:
  a timed computation that writes a fresh array would mostly measure the kernel's first touch
  of its pages.
  """
  n = 2048
  a = jax.random.normal(jax.random.key(0), (n, n))
  b = jax.random.normal(jax.random.key(1), (n, n))
  matmul_seconds = timing.median_seconds(jax.jit(jnp.matmul), a, b, repeats=repeats)
  size = 16 * 2**20  # float32 elements: 64 MiB
  x = jax.random.normal(jax.random.key(2), (size,))
  y = jax.random.normal(jax.random.key(3), (size,))
  dot = jax.jit(lambda x, y: jnp.sum(x * y))
  stream_seconds = timing.median_seconds(dot, x, y, repeats=repeats)
  return {
    "matmul_gflops": 2 * n**3 / matmul_seconds / 1e9,
    "stream_gbytes_per_s": 2 * 4 * size / stream_seconds / 1e9,
  }


def step_parts(exp, config) -> dict[str, timing.Part]:
  """Each part of the step as a pure function and its arguments.

  Every array is an argument, never a closure constant: XLA would constant-fold what does not
  depend on the differentiated inputs (the similarity target's Gram product, for one).
  """
  batch_size = config.train.batch_size
  model = config.model.alignrec
  dim = model.embed_dim
  tau = model.loss.temperature
  features = exp.train_data.features
  graphs = exp.train_data.graphs
  num_users = exp.dataset.num_users
  keys = jax.random.split(jax.random.key(2), 8)
  rows = tuple(jax.random.normal(k, (batch_size, dim)) for k in keys[:4])
  mask = jnp.ones(batch_size)

  def info_nce_pair(a, b, c, d, mask):
    return losses.info_nce(anchors=a, positives=b, temperature=tau, mask=mask) + losses.info_nce(
      anchors=c, positives=d, temperature=tau, mask=mask
    )

  def similarity(embeddings, batch_features, mask):
    return losses.similarity_preservation(embeddings=embeddings, features=batch_features, mask=mask)

  def projection(table, kernel, cotangent):
    return jnp.sum((table @ kernel) * cotangent)

  def propagation(ego, graphs):
    ids = lightgcn(graphs.user_item, ego, num_layers=model.num_ui_layers)
    content_items = propagate(graphs.item_knn, ego[num_users:])
    content_users = propagate(graphs.user_item_block, content_items)
    return jnp.sum(ids * ids) + jnp.sum(content_items) + jnp.sum(content_users)

  adam = optax.adam(config.optim.lr)
  table = jnp.array(features, copy=True)

  def adam_f(table, adam_state, grad):
    updates, adam_state = adam.update(grad, adam_state, table)
    return optax.apply_updates(table, updates), adam_state, grad

  grad = jax.value_and_grad
  Part = timing.Part  # noqa: N806
  return {
    "info_nce": Part(grad(info_nce_pair, (0, 1, 2, 3)), (*rows, mask)),
    "similarity": Part(grad(similarity), (rows[0], features[:batch_size], mask)),
    "projection": Part(
      grad(projection, (0, 1)),
      (
        features,
        jax.random.normal(keys[4], (features.shape[1], dim)) * 0.03,
        jax.random.normal(keys[5], (features.shape[0], dim)),
      ),
    ),
    "adam_f": Part(
      adam_f,
      (table, adam.init(table), jax.random.normal(keys[7], table.shape) * 1e-3),
      carries=True,
    ),
    "propagation": Part(
      grad(propagation),
      (jax.random.normal(keys[6], (graphs.user_item.shape[0], dim)) * 0.1, graphs),
    ),
  }


def main(argv):
  del argv
  config = _CONFIG.value
  scale_data.use_shape(config, _SHAPE.value, _WORKDIR.value)
  repeats = _REPEATS.value
  result = {"config": config.data.name, **machine.describe(), "batch_size": config.train.batch_size}
  roofline = machine_roofline(repeats)
  result.update(roofline)
  exp = stage2_setup.build_experiment(config, _WORKDIR.value)
  recommender = stage2.build_recommender(config, exp)
  state = recommender.init_state(jax.random.key(0), exp.train_data)
  steps = recommender.steps_per_epoch
  measured = {
    name: (
      timing.xla_cost(part.fn, *part.args),
      timing.in_loop_seconds(part, iterations=_ITERATIONS.value, repeats=repeats),
    )
    for name, part in step_parts(exp, config).items()
  }
  epoch_seconds = None
  if _EPOCHS.value:  # 0: the parts only (an Electronics-scale epoch takes minutes)
    cost = timing.step_cost(recommender, exp, state)
    epoch = recommender.make_train_epoch()
    state, _ = jax.block_until_ready(epoch(state, exp.train_data, jax.random.key(1)))  # compiles
    _, epoch_times = timing.timed_epochs(epoch, state, exp.train_data, epochs=_EPOCHS.value)
    epoch_seconds = statistics.median(epoch_times)
    measured["step"] = (cost, epoch_seconds / steps)

  parts = {}
  for name, ((flops, bytes_accessed), seconds) in measured.items():
    floor = flops / (roofline["matmul_gflops"] * 1e9) + bytes_accessed / (
      roofline["stream_gbytes_per_s"] * 1e9
    )
    parts[name] = {
      "ms": 1e3 * seconds,
      "gflop": flops / 1e9,
      "gbytes": bytes_accessed / 1e9,
      "roofline_ms": 1e3 * floor,
      "over_roofline": seconds / floor,
    }
    print(
      f"{name:12s} {1e3 * seconds:7.1f} ms  {flops / 1e9:6.2f} GFLOP  "
      f"{bytes_accessed / 1e9:6.3f} GB  roofline {1e3 * floor:6.1f} ms  "
      f"x{seconds / floor:4.2f}"
    )
  result.update(
    parts=parts,
    steps_per_epoch=steps,
    epoch_seconds=epoch_seconds,
    parts_sum_ms=sum(p["ms"] for name, p in parts.items() if name != "step"),
  )
  machine.report(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
