r"""Stage-1 speed: the cross-modal encoder's pre-training epoch and encode pass, at dataset shapes.

  python -m benchmarks.bench_stage1 --preset=ml100k                  # configs/default.py
  python -m benchmarks.bench_stage1 --preset=baby --config=configs/stage1_gpu.py
  python -m benchmarks.bench_stage1 --preset=lfm2k --config.stage1.model.width=256 --timed_epochs=2

Throughput depends only on the shapes of the content, so the inputs are synthetic (NumPy RNG,
fixed seed; no dataset files, no network) with the shapes of the named dataset:

  ml100k  1,682 items: text "sequence" [I, 33, 384], 5-25 real tokens (mean 15); genre
          "categorical" [I, 6], vocabulary 19, 1-6 real ids (the rest -1);
  lfm2k   1,425 items: text "sequence" [I, 64, 384], 26-64 real tokens (mean 45); audio
          "vector" [I, 128];
  baby    7,050 items: text "sequence" [I, 64, 384], 16-64 real tokens (mean 40); image
          "vector" [I, 4096].

The config's `stage1` section gives the encoder, batch size, masking and encode batch size; its
`modalities` are ignored (the preset's take their place), and `text_max_tokens` caps the text
slots. The epoch is compiled ahead of time (`.lower().compile()`, timed), run once as warm-up,
then `timed_epochs` times; the encode pass over all items (`stage1.encode_items`) is run once
(compiling it) and then `timed_encodes` times. Every timed call ends in `block_until_ready`;
times are medians. FLOPs come from XLA's cost analysis of one training step before optimisation
(XLA counts a scanned loop's body once, so the epoch's own analysis would be off by the step
count; the unoptimised step needs no second compile, and its dot products, which dominate, are
the same as after optimisation). `--output` appends the result as one JSON line.
"""

import json
import math
import statistics
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from alignrec_jax.data.content import Content, ModalityInput, ModalitySpec
from alignrec_jax.normalize import standardize_rows
from alignrec_jax.training import stage1
from benchmarks import machine

_TEXT_DIM = 384  # MiniLM's hidden size


class _Text(NamedTuple):
  """A "sequence" modality: token states [I, slots, 384], real lengths uniform in [lo, hi]."""

  slots: int
  lo: int
  hi: int


class _Tags(NamedTuple):
  """A "categorical" modality: [I, slots] ids below `vocab`, 1..slots real per item."""

  slots: int
  vocab: int


class _Vector(NamedTuple):
  """A "vector" modality: one [I, dim] feature per item."""

  dim: int


# name -> (items, modalities in token order).
PRESETS: dict[str, tuple[int, dict[str, _Text | _Tags | _Vector]]] = {
  "ml100k": (1_682, {"text": _Text(33, 5, 25), "genre": _Tags(6, 19)}),
  "lfm2k": (1_425, {"text": _Text(64, 26, 64), "audio": _Vector(128)}),
  "baby": (7_050, {"text": _Text(64, 16, 64), "image": _Vector(4096)}),
}

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/default.py", "Config; its `stage1` section is used.", lock_config=True
)
_PRESET = flags.DEFINE_enum("preset", "ml100k", list(PRESETS), "Dataset shapes to synthesise.")
_EPOCHS = flags.DEFINE_integer(
  "timed_epochs", 5, "Epochs timed after the warm-up epoch.", lower_bound=1
)
_ENCODES = flags.DEFINE_integer(
  "timed_encodes", 3, "Encode passes timed after the first one.", lower_bound=1
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic content.")
_OUTPUT = flags.DEFINE_string("output", "", "Append the result as a JSON line to this file.")


def synthetic_content(
  preset: str, *, text_max_tokens: int, vector_tokens: int, seed: int
) -> Content:
  """Random item content with the shapes of `preset` (see the module docstring).

  Args:
    preset: a key of `PRESETS`.
    text_max_tokens: caps the text slots, as the MiniLM truncation does for real text.
    vector_tokens: the tokens each "vector" modality is projected into.
    seed: NumPy RNG seed.
  """
  num_items, modalities = PRESETS[preset]
  rng = np.random.default_rng(seed)
  specs, inputs, lines = [], {}, []
  for name, shape in modalities.items():
    if isinstance(shape, _Text):
      slots = min(shape.slots, text_max_tokens)
      lengths = np.minimum(rng.integers(shape.lo, shape.hi + 1, num_items), slots)
      mask = np.arange(slots) < lengths[:, None]
      states = rng.standard_normal((num_items, slots, _TEXT_DIM), dtype=np.float32)
      states *= mask[..., None]  # padding states are zero, as in the cached MiniLM states
      inputs[name] = ModalityInput(values=states, mask=mask, present=mask.any(axis=1))
      specs.append(ModalitySpec(name, "sequence", input_dim=_TEXT_DIM, max_len=slots))
      lines.append(
        f"{name} sequence [{num_items}, {slots}, {_TEXT_DIM}] (mean {lengths.mean():.1f} real)"
      )
    elif isinstance(shape, _Tags):
      counts = rng.integers(1, shape.slots + 1, num_items)
      ids = rng.integers(0, shape.vocab, (num_items, shape.slots)).astype(np.int32)
      ids[np.arange(shape.slots) >= counts[:, None]] = -1
      inputs[name] = ModalityInput(values=ids)
      specs.append(ModalitySpec(name, "categorical", max_len=shape.slots, vocab_size=shape.vocab))
      lines.append(
        f"{name} categorical [{num_items}, {shape.slots}] vocabulary {shape.vocab} "
        f"(mean {counts.mean():.1f} real)"
      )
    else:
      # Standardised as `data.content` does with real features, so the values the encoder
      # sees have the real inputs' scale.
      values = standardize_rows(rng.standard_normal((num_items, shape.dim), dtype=np.float32))
      inputs[name] = ModalityInput(values=values, present=np.ones(num_items, bool))
      specs.append(ModalitySpec(name, "vector", input_dim=shape.dim, num_tokens=vector_tokens))
      lines.append(f"{name} vector [{num_items}, {shape.dim}] -> {vector_tokens} tokens")
  return Content(specs=tuple(specs), inputs=inputs, description="; ".join(lines))


def _timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def _device_peak_gib() -> float | None:
  """Peak accelerator memory in use so far; None where the backend keeps no statistics (CPU)."""
  stats = jax.devices()[0].memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**30


def _step_gflop(pretrainer, state, inputs) -> float:
  """XLA's FLOPs (in G) for one training step, from the unoptimised HLO (no compile).

  Lowered for the CPU whatever the backend: the count depends only on shapes, and the GPU
  lowering's cost analysis came back without FLOPs (NaN in the H100 run of 2026-11-27).
  """
  step = jax.jit(pretrainer.train_step)
  rows = jnp.arange(pretrainer.batch_size) % pretrainer.num_examples
  # Shapes only (no device placement), so that lowering for another platform is allowed.
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
    (state, inputs, rows, jnp.ones(len(rows), bool), jax.random.key(0)),
  )
  cost = step.trace(*abstract).lower(lowering_platforms=("cpu",)).cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float((cost or {}).get("flops", math.nan)) / 1e9


def main(argv):
  del argv
  config = _CONFIG.value.stage1
  preset = _PRESET.value
  sizes = {k: v for k, v in json.loads(config.to_json()).items() if k != "data"}
  result = {
    "preset": preset,
    "config_file": config_flags.get_config_filename(flags.FLAGS["config"]),
    "stage1": sizes,
    **machine.describe(),
  }

  start = time.perf_counter()
  content = synthetic_content(
    preset,
    text_max_tokens=config.data.text_max_tokens,
    vector_tokens=config.model.vector_tokens,
    seed=_SEED.value,
  )
  inputs = jax.block_until_ready(jax.device_put(content.inputs))
  result["setup_seconds"] = time.perf_counter() - start
  num_items = content.num_items
  pretrainer = stage1.build_pretrainer(config, content)
  steps = math.ceil(num_items / pretrainer.batch_size)
  # A full batch (the epoch's shape) of real items: the example for the parameters.
  rows = jnp.arange(pretrainer.batch_size) % num_items
  example = stage1.gather_batch(inputs, rows, jnp.ones(pretrainer.batch_size, bool))
  state = pretrainer.init_state(jax.random.key(0), example)
  result.update(
    num_items=num_items,
    steps_per_epoch=steps,
    content=content.description,
    tokens_per_item=1
    + sum(s.num_tokens if s.kind == "vector" else s.max_len for s in content.specs),
    num_params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)),
  )
  result["peak_rss_gib_after_setup"] = machine.peak_rss_gib()

  epoch_fn = pretrainer.make_train_epoch()
  key = jax.random.key(1)
  start = time.perf_counter()
  compiled = epoch_fn.lower(state, inputs, key).compile()
  result["compile_seconds"] = time.perf_counter() - start
  result["peak_rss_gib_after_compile"] = machine.peak_rss_gib()

  # The state is donated: each call's output state replaces the input.
  (state, _), result["warmup_epoch_seconds"] = _timed(compiled, state, inputs, key)
  epoch_times, terms = [], {}
  for epoch in range(_EPOCHS.value):
    (state, terms), seconds = _timed(compiled, state, inputs, jax.random.key(epoch + 2))
    epoch_times.append(seconds)
  result["epoch_seconds_median"] = statistics.median(epoch_times)
  result["epoch_seconds_all"] = epoch_times
  result["items_per_second"] = num_items / result["epoch_seconds_median"]
  # A sanity check that the timed epochs did real work (a NaN here would void the timing).
  result["last_epoch_terms"] = {k: float(v) for k, v in terms.items()}
  result["peak_rss_gib_after_training"] = machine.peak_rss_gib()

  # The NumPy inputs, as `run_stage1` passes them: encode_items slices them on the host.
  def encode():
    return stage1.encode_items(
      state.params, pretrainer.module, content.inputs, config.train.encode_batch_size
    )

  _, result["encode_first_call_seconds"] = _timed(encode)
  encode_times = [_timed(encode)[1] for _ in range(_ENCODES.value)]
  result["encode_seconds_median"] = statistics.median(encode_times)

  step_gflop = _step_gflop(pretrainer, state, inputs)
  epoch_gflop = step_gflop * steps
  result.update(
    step_gflop=step_gflop,
    epoch_gflop=epoch_gflop,
    achieved_gflops=epoch_gflop / result["epoch_seconds_median"],
  )
  result["peak_rss_gib"] = machine.peak_rss_gib()
  result["peak_device_gib"] = _device_peak_gib()

  machine.report(result, _OUTPUT.value)
  device_memory = (
    "" if result["peak_device_gib"] is None else f", device {result['peak_device_gib']:.2f} GiB"
  )
  print(
    f"\nstage 1, {preset} shapes on {jax.default_backend()} "
    f"({result['devices'][0]}): {content.description}\n"
    f"  encoder {config.model.num_layers} x {config.model.width} "
    f"({config.model.num_heads} heads), {result['num_params']:,} parameters; "
    f"{num_items:,} items, {steps} steps of {pretrainer.batch_size}, "
    f"{result['tokens_per_item']} tokens an item\n"
    f"  compile {result['compile_seconds']:.1f} s | "
    f"epoch {result['epoch_seconds_median']:.3f} s median of {len(epoch_times)} "
    f"({result['items_per_second']:,.0f} items/s) | "
    f"encode all items {result['encode_seconds_median']:.3f} s\n"
    f"  {step_gflop:.1f} GFLOP a step, {result['achieved_gflops']:,.0f} GFLOP/s | "
    f"peak RSS {result['peak_rss_gib']:.2f} GiB{device_memory}"
  )


if __name__ == "__main__":
  app.run(main)
