#!/usr/bin/env bash
# Reproduces docs/results/benchmark/<topic>/: every family trained with one recipe per seed on
# data built by our own builder, checkpoint chosen on val, test scored once per run, network
# alone; mean ± sd over seeds and paired intervals by size and scatter (docs/results/benchmark/).
#
#   bash scripts/run_benchmark.sh cpu    # EfficientNet-Lite0 + MiniLM families, 2 CPU cores
#   bash scripts/run_benchmark.sh gpu    # Swin-B + BERT-base families, one GPU, ~10 minutes
#
# Environment: DATA (default data/dubai, built when missing from ../shared/data/dubai-aerial),
# OUT (default docs/results/benchmark/dubai-<budget>), SEEDS (default 0,1), ADD_MODELS (a family
# run beside the budget's, e.g. rmsin_swin_base; the finished runs in OUT are reused), and for
# gpu SWIN (ImageNet-22k Swin-B window-12 checkpoint) and BERT (bert-base-uncased directory).
# A rerun with the same OUT continues an interrupted benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-cpu}
RRSIS=${RRSIS:-.venv/bin/rrsis}
DATA=${DATA:-data/dubai}
OUT=${OUT:-docs/results/benchmark/dubai-$BUDGET}
SEEDS=${SEEDS:-0,1}
if [ ! -d "$DATA" ]; then
  "$RRSIS" data dubai "${DUBAI_SOURCE:-../shared/data/dubai-aerial}" "$DATA"
fi
args=(benchmark --budget "$BUDGET" --seeds "$SEEDS" --data "$DATA" --out "$OUT" --no-progress)
if [ -n "${ADD_MODELS:-}" ]; then
  args+=(--add-models "$ADD_MODELS")
fi
case "$BUDGET" in
  cpu)
    # One thread per process: on a shared 2-core machine two threads mostly wait for each other.
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$RRSIS" "${args[@]}" --device cpu
    ;;
  gpu | converged)
    : "${SWIN:?set SWIN to a local Swin-B checkpoint (ImageNet-22k, window 12)}"
    : "${BERT:?set BERT to a local bert-base-uncased directory}"
    "$RRSIS" "${args[@]}" --device cuda --model-arg "pretrained=$SWIN,text_pretrained=$BERT"
    ;;
  *)
    echo "usage: $0 cpu|gpu|converged" >&2
    exit 2
    ;;
esac
