#!/usr/bin/env bash
# The stage-2 benchmarks on one GPU (the same scripts as on the CPU; every number is written
# with the machine and versions beside it). For the workplace's H100/H200 image, which has
# jax with CUDA, flax, optax and orbax but not jraph or ml-collections, prepare here first:
#
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl jraph==0.0.6.dev0 ml-collections
#   mkdir -p .data/baby-graph && cp ../shared/data/baby-graph/baby.inter .data/baby-graph/
#
# then run `bash benchmarks/gpu.sh` there with `.whl` and `.data` carried. Results are appended
# to $OUT (default benchmarks/results) as JSON lines. About 3 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
DATA=${DATA:-}
[ -z "$DATA" ] && [ -d .data/baby-graph ] && DATA=--config.data.path=.data/baby-graph
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
for kernel in segment_sum csr; do  # pick the faster propagation kernel on this backend
  "$PY" -m benchmarks.bench_train --config=configs/baby_graph.py $DATA \
    --config.model.kernel=$kernel --timed_epochs=10 --output="$OUT/train_gpu.jsonl"
done
"$PY" -m benchmarks.bench_knn --output="$OUT/knn_gpu.jsonl"
