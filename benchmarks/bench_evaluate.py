"""Times `alignrec_jax.evaluate.evaluate` at Baby scale (valid + test from one scoring pass).

Uses the real Baby interaction graph when /work/shared/data/baby-graph/baby.inter exists (random
64-d embeddings: the cost does not depend on their values), else synthetic ids of the same size.
Reports the host-side preparation, the first call (compilation included) and the median of 5 calls
after a warm-up call, for each chunk size and ranking method.

  .venv/bin/python benchmarks/bench_evaluate.py [--chunk-sizes 128,256,512] \
      [--methods count,top_k] [--inter PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from alignrec_jax.data.dataset import Dataset, Interactions
from alignrec_jax.evaluate import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_KS,
    METHODS,
    _evaluate_sums,
    evaluate,
    make_eval_data,
)

BABY_INTER = Path("/work/shared/data/baby-graph/baby.inter")
# Baby's size (MMRec): used for the synthetic fallback.
BABY_USERS, BABY_ITEMS, BABY_PAIRS = 19_445, 7_050, 160_792


def _load_inter(path: Path) -> Dataset:
  """Parses an MMRec .inter TSV (userID itemID rating timestamp x_label, with a header)."""
  table = np.loadtxt(path, delimiter="\t", skiprows=1, usecols=(0, 1, 4), dtype=np.int64)
  users, items, labels = table[:, 0], table[:, 1], table[:, 2]
  splits = [
      Interactions(users[labels == x].astype(np.int32), items[labels == x].astype(np.int32))
      for x in range(3)
  ]
  return Dataset(
      name=path.stem,
      num_users=int(users.max()) + 1,
      num_items=int(items.max()) + 1,
      train=splits[0],
      valid=splits[1],
      test=splits[2],
  )


def _synthetic(seed: int = 0) -> Dataset:
  """Random pairs of Baby's size, split 80/10/10."""
  rng = np.random.default_rng(seed)
  users = rng.integers(0, BABY_USERS, BABY_PAIRS, dtype=np.int32)
  items = rng.integers(0, BABY_ITEMS, BABY_PAIRS, dtype=np.int32)
  labels = rng.choice(3, BABY_PAIRS, p=[0.8, 0.1, 0.1])
  splits = [Interactions(users[labels == x], items[labels == x]) for x in range(3)]
  return Dataset("synthetic-baby", BABY_USERS, BABY_ITEMS, *splits)


def _load_average() -> str:
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "n/a"


def _cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "n/a"


def _time_one(
    dataset: Dataset, chunk_size: int, methods: list[str], dim: int, repeats: int
) -> None:
  start = time.perf_counter()
  data = jax.device_put(make_eval_data(dataset, chunk_size=chunk_size))
  prep_s = time.perf_counter() - start
  print(
      f"chunk_size={chunk_size}: {data.num_chunks} chunks, prepare {prep_s * 1e3:.0f} ms, "
      f"{data.pass_items.shape[0] - 1} counting passes"
  )
  key_u, key_i = jax.random.split(jax.random.key(0))
  user_emb = jax.random.normal(key_u, (dataset.num_users, dim), jax.numpy.float32)
  item_emb = jax.random.normal(key_i, (dataset.num_items, dim), jax.numpy.float32)
  jax.block_until_ready((user_emb, item_emb))
  for method in methods:
    # evaluate() returns host floats, so every call below has finished on device when timed.
    start = time.perf_counter()
    results = evaluate(user_emb, item_emb, data, method=method)
    first_s = time.perf_counter() - start
    evaluate(user_emb, item_emb, data, method=method)  # warm-up
    times, device_times = [], []
    for _ in range(repeats):
      start = time.perf_counter()
      evaluate(user_emb, item_emb, data, method=method)
      times.append(time.perf_counter() - start)
      # The jitted device part alone (per-chunk sums), without the host-side division.
      start = time.perf_counter()
      jax.block_until_ready(_evaluate_sums(user_emb, item_emb, data, DEFAULT_KS, method))
      device_times.append(time.perf_counter() - start)
    print(
        f"  {method:6s} first call {first_s:5.2f} s, median of {repeats} "
        f"{statistics.median(times) * 1e3:6.0f} ms (min {min(times) * 1e3:.0f}, "
        f"max {max(times) * 1e3:.0f}; device part {statistics.median(device_times) * 1e3:.0f}"
        f" ms); users valid/test {results['valid']['num_users']}/"
        f"{results['test']['num_users']}, test recall@20 {results['test']['recall@20']:.5f}"
    )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--inter", type=Path, default=BABY_INTER)
  parser.add_argument("--chunk-sizes", default=str(DEFAULT_CHUNK_SIZE))
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  print(
      f"machine: {platform.processor() or 'n/a'} ({_cpu_model()}), {os.cpu_count()} CPUs, "
      f"load average {_load_average()}; jax {jax.__version__}, backend {jax.default_backend()}, "
      f"devices {jax.devices()}"
  )
  if args.inter.exists():
    dataset = _load_inter(args.inter)
  else:
    print(f"{args.inter} not found: synthetic ids")
    dataset = _synthetic()
  print(dataset.summary())
  for chunk_size in (int(c) for c in args.chunk_sizes.split(",")):
    _time_one(dataset, chunk_size, args.methods.split(","), args.dim, args.repeats)
  print(f"load average after: {_load_average()}")


if __name__ == "__main__":
  main()
