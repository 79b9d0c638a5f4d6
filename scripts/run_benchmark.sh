#!/usr/bin/env bash
# Reproduces docs/results/benchmark/{dubai,synth}: the four CPU variants trained with one recipe
# (preset `default`, 2 epochs, seed 0) on data built by our own builders, checkpoint chosen on val,
# scored once on test. Data: `rrsis data dubai ../shared/data/dubai-aerial data/dubai` and
# `rrsis data synth data/synth --n 600 --seed 0` (scripts/train_default.py builds both).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-lavt_effnet_minilm,lgce_effnet_minilm,rrn_effnet_minilm,cmsa_effnet_minilm}
EPOCHS=${EPOCHS:-2}
for name in dubai synth; do
  .venv/bin/rrsis benchmark --models "$MODELS" --data "data/$name" --preset default \
    --epochs "$EPOCHS" --seed 0 --device cpu --no-progress --out "docs/results/benchmark/$name"
done
