#!/usr/bin/env bash
# Runs every speed/memory benchmark on an otherwise idle machine and keeps the JSON they print
# under docs/results/speed/ (the numbers quoted in README.md, docs/models.md and the model card).
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/results/speed
mkdir -p "$out"
py=.venv/bin/python
uptime > "$out/load_before.txt"
# The shipped model on one 512x512 tile (batch 1, 2 threads) and its peak RSS.
$py benchmarks/bench_default_model.py --threads 2 --repeats 20 > "$out/default_model.json"
# The same without folding the batch norms (Segmenter(fuse=False)).
$py benchmarks/bench_default_model.py --threads 2 --repeats 20 --no-fuse > "$out/default_model_nofuse.json"
# Segmenter calls per expression kind, with the composition rules (default) and without.
$py benchmarks/bench_compose.py --threads 2 --repeats 10 > "$out/compose.json"
# Fast CPU variants at their default size.
$py benchmarks/bench_models.py --models lgce_effnet_minilm,lavt_effnet_minilm,rrn_effnet_minilm,cmsa_effnet_minilm \
  --threads 2 --repeats 10 > "$out/cpu_variants.json"
# The LGCE CPU variant at 512 with the opt-in bf16 mode (fp32 vs bf16 latency, mask agreement).
$py benchmarks/bench_models.py --models lgce_effnet_minilm --threads 2 --repeats 10 --bf16 > "$out/lgce_effnet_minilm_bf16.json"
# Paper configurations at 480x480: fp32 with our speed helpers, plain fp32, and bf16 + agreement.
$py benchmarks/bench_models.py --models lavt_swin_base,lgce_swin_base --threads 2 --repeats 3 \
  --bf16 --plain > "$out/paper_configs.json"
# Scene inference with the shipped model: throughput and flat memory on 4000^2 and 8000^2 scenes.
# batch 1, and batch 4 (the `rrsis predict-scene` default).
$py benchmarks/bench_scene.py --threads 2 --sizes 4000 8000 --repeats 3 > "$out/scene.json"
$py benchmarks/bench_scene.py --threads 2 --sizes 4000 8000 --batch 4 --repeats 3 > "$out/scene_batch4.json"
$py benchmarks/bench_scene.py --threads 2 --sizes 4000 8000 --batch 4 --repeats 3 --no-fuse > "$out/scene_batch4_nofuse.json"
# The same with --bf16 (bfloat16 autocast, opt-in: `rrsis predict-scene --bf16`).
$py benchmarks/bench_scene.py --threads 2 --sizes 4000 8000 --batch 4 --repeats 3 --bf16 > "$out/scene_batch4_bf16.json"
# Three expressions, one of them a relation, with the composition rules and without.
$py benchmarks/bench_scene.py --threads 2 --sizes 4000 --batch 4 --expressions 3 > "$out/scene_batch4_3expr_compose.json"
$py benchmarks/bench_scene.py --threads 2 --sizes 4000 --batch 4 --expressions 3 --compose none > "$out/scene_batch4_3expr_none.json"
# With --overviews (internal overviews of the output, opt-in).
$py benchmarks/bench_scene.py --threads 2 --sizes 4000 8000 --batch 4 --overviews > "$out/scene_batch4_overviews.json"
# With --cog (Cloud Optimized GeoTIFF output, opt-in).
$py benchmarks/bench_scene.py --threads 2 --sizes 4000 8000 --batch 4 --cog > "$out/scene_batch4_cog.json"
# A Segmenter call on an image over 768 px: 512 px windows (default) and one whole-image resize.
large=../shared/data/dubai-aerial/tile5/images/image_part_001.jpg
if [ -f "$large" ]; then
  $py benchmarks/bench_compose.py --threads 2 --repeats 3 --image "$large" > "$out/compose_large.json"
  $py benchmarks/bench_compose.py --threads 2 --repeats 3 --image "$large" --tiling never \
    > "$out/compose_large_never.json"
fi
# Training input pipeline, decoded per epoch or preloaded (needs the data of make train-default).
if [ -d data/dubai_dense ] && [ -d data/synth ]; then
  $py benchmarks/bench_train_loader.py --threads 2 --workers 2 > "$out/train_loader.json"
  # Training steps of the shipped recipe in channels-last memory (the default) and in NCHW.
  $py benchmarks/bench_train_step.py --threads 2 --steps 12 --skip 3 --bare-steps 6 \
    > "$out/train_step.json"
  $py benchmarks/bench_train_step.py --threads 2 --steps 12 --skip 3 --bare-steps 5 \
    --no-channels-last > "$out/train_step_nchw.json"
fi
# How long saving the paper model's training state (2.7 GB) stops training: sync vs background.
$py benchmarks/bench_checkpoint.py --repeats 3 --out-dir "${TMPDIR:-/tmp}/rrsis-checkpoint-bench" \
  > "$out/checkpoint_cpu.json"
# LAVT against the official code at 480 px, batch 1, with the operator profile, then with
# torch.compile (LAVT_RIS: a checkout of https://github.com/yz93/LAVT-RIS).
if [ -n "${LAVT_RIS:-}" ]; then
  for dtype in fp32 bf16; do
    $py benchmarks/bench_official.py --official "$LAVT_RIS" --batch 1 --threads 2 --repeats 3 \
      --warmup 1 --dtype "$dtype" --no-train --no-compile --profile \
      > "$out/official_480_cpu_profile_$dtype.json"
    $py benchmarks/bench_official.py --official "$LAVT_RIS" --batch 1 --threads 2 --repeats 3 \
      --warmup 1 --dtype "$dtype" --no-train > "$out/official_480_cpu_compile_$dtype.json"
  done
fi
# Cold start-up of `rrsis predict` on one 512 px tile, in fresh interpreters.
$py benchmarks/bench_startup.py --repeats 7 > "$out/startup.json"
# A nodata margin must not change the valid pixels (needs ../shared/data/dubai-aerial).
if [ -d ../shared/data/dubai-aerial ]; then
  $py benchmarks/bench_nodata.py > "$out/nodata.json"
fi
# ONNX Runtime against PyTorch: one tile at batch 1 (alternating), export choices, predict-scene.
$py benchmarks/bench_onnx.py --threads 2 --repeats 20 --scene-size 2048 --scene-repeats 3 > docs/results/onnx/speed.json
uptime > "$out/load_after.txt"
