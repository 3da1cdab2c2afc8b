#!/usr/bin/env bash
# Issue-3 result tables on one GPU: launch.sweep (stage 2 over feature inputs x {lr 1e-3, 5e-4}
# x {cl_weight 0.01, 0.1} x seeds 999/1000/1001, selected on validation) on ml100k, then lfm2k,
# several runs at once. The GPU machine has no network and no ../shared, so prepare here:
#
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl jraph==0.0.6.dev0 ml-collections
#   mkdir -p .data/lfm2k .data/ml100k
#   cp ../shared/data/lfm2k/{lfm2k.inter,text_feat.npy,audio_feat.npy} .data/lfm2k/
#   cp data/ml100k/{ml100k.inter,text_feat.npy,genre_feat.npy,meta.json} .data/ml100k/
#   cp RUN/stage1/stage1_feat.npy .data/lfm2k_stage1_feat.npy     # from launch.pipeline runs
#   cp RUN/stage1/stage1_feat.npy .data/ml100k_stage1_feat.npy    # with the current defaults
#
# and run it there with `.whl` and `.data` carried. Each sweep stops starting runs after its
# time budget (ML100K_BUDGET, LFM2K_BUDGET seconds) and lets the running ones finish; sweep.json
# and a tarball of every run's summary and metrics land in $OUT. A second call with the same
# budgets on the same warm machine resumes (finished runs are kept under /tmp/sweep_*).
# Back here, unpack each runs.tgz beside its sweep.json into a folder DIR and file them with
# `python -m benchmarks.collect_sweep --sweep=DIR --dataset=NAME --runs=benchmarks/results/
# sweep_runs_gpu.jsonl --table=benchmarks/results/sweep_NAME_gpu.json`.
# INPUTS_ML100K / INPUTS_LFM2K choose the inputs (empty: skip that dataset). Every table is
# complete: ml100k's inputs and lfm2k's stage-1 features and audio ran on the CPU,
# lfm2k's raw text and concatenation on a GPU. The default, ml100k text and genre alone, repeats
# the last CPU tables on a GPU as a cross-check.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/sweep_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
# Several processes share the GPU: no process may take most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache  # seeds of one setting compile once
PARALLEL=${PARALLEL:-12}
nvidia-smi --query-gpu=name,memory.total --format=csv || true
sweep() {  # dataset, config, budget, then flags
  local name=$1 config=$2 budget=$3; shift 3
  local work=/tmp/sweep_$name
  "$PY" -m launch.sweep --config="$config" --workdir="$work" --parallel="$PARALLEL" \
    --time_budget="$budget" --stage1_features=".data/${name}_stage1_feat.npy" \
    --config.train.checkpoint_every=100000 "$@" 2>&1 | grep -v "^W[0-9]"
  mkdir -p "$OUT/$name"
  cp "$work/sweep.json" "$OUT/$name/" 2>/dev/null
  (cd "$work" && find runs -name summary.json -o -name metrics.jsonl | tar czf "$OUT/$name/runs.tgz" -T -)
}
INPUTS_ML100K=${INPUTS_ML100K-text,genre}
INPUTS_LFM2K=${INPUTS_LFM2K-}
if [ -n "$INPUTS_ML100K" ]; then
  sweep ml100k configs/ml100k.py "${ML100K_BUDGET:-300}" --config.data.path=.data/ml100k \
    --config.train.max_epochs=1000 --inputs="$INPUTS_ML100K"
fi
if [ -n "$INPUTS_LFM2K" ]; then
  sweep lfm2k configs/lfm2k.py "${LFM2K_BUDGET:-60}" --config.data.path=.data/lfm2k \
    --inputs="$INPUTS_LFM2K"
fi
