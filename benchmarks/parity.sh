#!/usr/bin/env bash
# The runs behind the parity table in benchmarks/README.md: our code at the authors' settings on
# the files they ran (../shared/data/README.md), three seeds each. Results: RUNS/*/seeds.json and
# the printed tables (tee'd into RUNS/*.txt). About 75 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/parity}
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-999,1000,1001}
mkdir -p "$RUNS"
run() {  # name, then launch.seeds flags
  local name=$1; shift
  "$PY" -m launch.seeds --workdir="$RUNS/$name" --seeds="$SEEDS" "$@" 2>&1 \
    | grep -v '^[IW][0-9]' | tee "$RUNS/$name.txt"
}
# AlignRec with aligned_feat.npy, 3 epochs (the authors' per-epoch table).
run synthetic_baby --config=configs/synthetic_baby.py --config.train.max_epochs=3 \
  --reference=synthetic-baby
# MMRec's LightGCN on lfm2k, to early stopping.
run lfm2k_lightgcn --config=configs/lightgcn_lfm2k.py --reference=lfm2k-lightgcn
# AlignRec on lfm2k to early stopping: the raw concatenation the authors' run used, then the
# spec's per-modality L2-normalised concatenation.
run lfm2k_alignrec_raw --config=configs/lfm2k.py --config.data.normalize_features=False \
  --reference=lfm2k-alignrec-raw
run lfm2k_alignrec_normalized --config=configs/lfm2k.py --reference=lfm2k-alignrec-raw
# MMRec's FREEDOM and BM3 on lfm2k (audio in MMRec's image slot), to early stopping.
run lfm2k_freedom --config=configs/freedom_lfm2k.py --reference=lfm2k-freedom
run lfm2k_bm3 --config=configs/bm3_lfm2k.py
