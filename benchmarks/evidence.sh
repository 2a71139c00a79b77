#!/usr/bin/env bash
# The runs behind docs/RESULTS.md §4–§7 (issue 16) on the real DeiT-Tiny and the 200 dev images, sized for two
# CPU cores: two streams of resumable `caap bench` runs, one thread each. Re-running resumes every run.
#
#     benchmarks/evidence.sh STREAM      # STREAM: 1, 2, 3 or 4 (side by side), OUT=runs by default
#
# Stream 3 is the controlled-evidence benchmark on the demo models and the backbone zoo (ZOO: the folder of
# `python -m caap.data.train --arch NAME --variant simple` weights, NAME_simple.safetensors).
#
# Subsets (stated in RESULTS.md): the top contenders on all 200 images; the weaker fast methods on every 4th;
# ROAD (18 sparse solves per map) on every 4th; the slow methods on every 10th (RISE with 1,000 masks) and MDA /
# extremal perturbations on every 50th; on the grids the fast methods on all cells, four slower ones on every
# 4th cell. Stream 4 is the variants study (benchmarks/variants.py).
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
ZOO=${ZOO:-zoo}
ZLOCAL=$LOCAL,relevance_rank,segmentation_pixel_accuracy,segmentation_miou,segmentation_ap
ALL_FAST=caap,caap_fast,caap_adaptive,gae,transformer_attribution,attnlrp,bidirectional,$REST,\
integrated_gradients,smoothgrad,occlusion,input_insertion,token_occlusion,tis
# the Eva family refuses the linear-rule methods, token insertion/occlusion and the fast and adaptive modes
# (docs/BASELINES.md)
EVA_FAST=caap,gae,bidirectional,$REST,integrated_gradients,smoothgrad,occlusion,input_insertion
bench() { caap bench "$@" --compare caap; }

if [ "$STREAM" = 1 ]; then
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods $TOP --metrics $FAITH --out "$OUT/deit-top"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,$REST --metrics $FAITH --every 4 \
        --out "$OUT/deit-rest"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,$MID,rise:masks=1000 --metrics $FAITH \
        --every 10 --out "$OUT/deit-slow"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,mda,extremal_perturbation --metrics $FAITH \
        --every 50 --out "$OUT/deit-slowest"
elif [ "$STREAM" = 3 ]; then
    for v in simple conjunction; do
        # the demo cards' band is 0:4 (docs/RESULTS.md §1); 2:4 is the middle third, the default elsewhere
        bench --model caap-demo-$v --data synthetic:$v --limit 50 --methods $ALL_FAST,caap:layers=2:4 \
            --metrics $ZLOCAL --out "$OUT/demo-$v"
    done
    for arch in deit3 reg_avg clip eva; do
        methods=$ALL_FAST
        [ $arch = eva ] && methods=$EVA_FAST
        # the zoo's cards carry no band, so `caap` is the middle third 2:4; 0:4 is the demo models' band
        bench --model caap-zoo-$arch --weights "$ZOO/${arch}_simple.safetensors" --data synthetic:simple --limit 50 \
            --methods "$methods,caap:layers=0:4" --metrics $ZLOCAL --out "$OUT/zoo-$arch-simple"
    done
    for v in simple conjunction; do
        bench --model caap-demo-$v --data synthetic:$v --limit 10 \
            --methods caap,gae,rise:masks=1000,mda,extremal_perturbation --metrics $ZLOCAL --out "$OUT/demo-$v-slow"
    done
elif [ "$STREAM" = 4 ]; then
    python "$(dirname "$0")/variants.py" --out "$OUT/variants" --reference "$OUT/deit-top"
else
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods $TOP,gradcam --metrics road,road_morf,road_lerf \
        --every 4 --out "$OUT/deit-road"
    bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods $TOP,$REST --metrics $LOCAL --out "$OUT/grid-fast"
    bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" \
        --methods caap,gae,caap_adaptive,integrated_gradients,smoothgrad,input_insertion --metrics $LOCAL --every 4 \
        --out "$OUT/grid-slow"
fi
