#!/usr/bin/env bash
# The scale suite: stage 2 at the shapes of Amazon Baby, Sports, Electronics and 10x
# Electronics, one process a preset, then the table and the epoch's growth exponent.
#
#   bash benchmarks/scale_suite.sh                       # this machine, results/scale_cpu.jsonl
#   OUT=benchmarks/results/scale_gpu.jsonl bash benchmarks/scale_suite.sh   # on a GPU
#
# Baby and Sports time a whole epoch; Electronics 30 steps and 10x Electronics 3 (each epoch is
# then extrapolated from the median step, and the record says so). 10x Electronics builds its
# item kNN graph with faiss's IVF search (the exact one is ~600 TFLOP) and skips evaluation
# (1.9 M users x 630 k items); it needs ~12 GiB of memory. Pause other jobs first: on 2 cores
# any other process makes the timings meaningless.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/scale_cpu.jsonl}
run() { "$PY" -m benchmarks.bench_scale --output="$OUT" "$@" || echo "FAILED: $*"; }
run --preset=baby --max_steps=1000
run --preset=sports --max_steps=1000
run --preset=electronics --max_steps=30
run --preset=electronics10x --max_steps=3 --repeats=2 --evaluate=false \
  --config.model.knn_search=ivf
"$PY" -m benchmarks.bench_scale --fit="$OUT"
