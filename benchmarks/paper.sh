#!/usr/bin/env bash
# The paper-style evaluation on real ViT backbones (issue 16), one command for users with a network:
#
#     benchmarks/paper.sh DATA_DIR OUT_DIR
#
# DATA_DIR: labelled images (ImageNet WordNet ids in the names, e.g. ImageNet val). For every model it runs
# (1) the faithfulness metrics on DATA_DIR and (2) the grid pointing game built from DATA_DIR (grid:DATA_DIR),
# each a resumable `caap bench` run in OUT_DIR/<model>/{images,grid}. The models come from the hubs (timm, and
# Hugging Face for DINOv2) and are cached after the first run. On these machines only DeiT-Tiny has real
# weights; tests/test_paper.py runs this script offline on random-init tiny configs of the same architectures.
#
# Settings (environment): PAPER_MODELS (space-separated --model values), PAPER_METHODS, PAPER_METRICS,
# PAPER_GRID_METRICS, PAPER_EVERY (every K-th image), PAPER_LIMIT, PAPER_GRID_THRESHOLD.
set -euo pipefail
DATA=${1:?usage: benchmarks/paper.sh DATA_DIR OUT_DIR}
OUT=${2:?usage: benchmarks/paper.sh DATA_DIR OUT_DIR}
MODELS=${PAPER_MODELS:-"vit_base_patch16_224.augreg2_in21k_ft_in1k deit3_base_patch16_224.fb_in22k_ft_in1k \
hf-hub:facebook/dinov2-base-imagenet1k-1-layer vit_base_patch16_clip_224.openai_ft_in1k"}
METHODS=${PAPER_METHODS:-"caap,caap_fast,gae,transformer_attribution,attnlrp,bidirectional,rollout,gradcam,\
integrated_gradients,occlusion,token_occlusion,tis"}
METRICS=${PAPER_METRICS:-"deletion,insertion,positive_perturbation,negative_perturbation,road,sparseness"}
GRID_METRICS=${PAPER_GRID_METRICS:-"pointing_game,relevance_mass,relevance_mass:resolution=patch,\
energy_pointing_game,energy_pointing_game:resolution=patch"}
EVERY=${PAPER_EVERY:-1}
LIMIT=${PAPER_LIMIT:+--limit $PAPER_LIMIT}
THRESHOLD=${PAPER_GRID_THRESHOLD:-0.5}

for model in $MODELS; do
    name=$(basename "$model" | tr ':/' '__')
    echo "== $model: images"
    # shellcheck disable=SC2086
    caap bench --model "$model" --data "$DATA" --methods "$METHODS" --metrics "$METRICS" --every "$EVERY" \
        $LIMIT --target label --out "$OUT/$name/images"
    echo "== $model: grid pointing game (threshold $THRESHOLD)"
    # a model right on too few cells builds no grid: caap bench refuses it in one line, and the next model runs
    # shellcheck disable=SC2086
    caap bench --model "$model" --data "grid:$DATA:threshold=$THRESHOLD" --methods "$METHODS" \
        --metrics "$GRID_METRICS" $LIMIT --target label --out "$OUT/$name/grid" || echo "== $model: no grid run"
done
echo "paper runs in $OUT: one folder per model, each with images/ and grid/ (table.md, report.html)"
