#!/usr/bin/env bash
# The runs behind docs/RESULTS.md §4–§7 (issue 16) on the real DeiT-Tiny and the 200 dev images, sized for two
# CPU cores: two streams of resumable `caap bench` runs, one thread each. Re-running resumes every run.
#
#     benchmarks/evidence.sh STREAM      # STREAM: 1 or 2 (run both side by side), OUT=runs by default
#
# Subsets (stated in RESULTS.md): the top contenders on all 200 images; the weaker fast methods on every 4th;
# ROAD (18 sparse solves per map) on every 4th; the slow methods on every 10th (RISE with 1,000 masks) and MDA /
# extremal perturbations on every 40th.
set -euo pipefail
STREAM=${1:?usage: benchmarks/evidence.sh 1|2}
DATA=${CAAP_DATA_DIR:-../shared/data}
OUT=${OUT:-runs}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DEIT=(--model deit_tiny_patch16_224 --weights "$DATA/deit_tiny_patch16_224.safetensors" --target label)
FAITH=deletion:step=14,insertion:step=14,positive_perturbation,negative_perturbation,sparseness
LOCAL=pointing_game,relevance_mass,relevance_mass:resolution=patch,energy_pointing_game,\
energy_pointing_game:resolution=patch
TOP=caap,caap_fast,gae,transformer_attribution,attnlrp,bidirectional
REST=raw_attention,rollout,gradcam,lrp,saliency,input_x_gradient
MID=caap_adaptive,integrated_gradients,smoothgrad,occlusion,input_insertion,token_occlusion,tis
bench() { caap bench "$@" --compare caap; }

if [ "$STREAM" = 1 ]; then
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods $TOP --metrics $FAITH --out "$OUT/deit-top"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,$REST --metrics $FAITH --every 4 \
        --out "$OUT/deit-rest"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,$MID,rise:masks=1000 --metrics $FAITH \
        --every 10 --out "$OUT/deit-slow"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,mda,extremal_perturbation --metrics $FAITH \
        --every 40 --out "$OUT/deit-slowest"
else
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods $TOP,gradcam --metrics road,road_morf,road_lerf \
        --every 4 --out "$OUT/deit-road"
    bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods $TOP,$REST --metrics $LOCAL --out "$OUT/grid-fast"
    bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods caap,gae,$MID --metrics $LOCAL --every 4 \
        --out "$OUT/grid-slow"
fi
