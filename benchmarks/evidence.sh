#!/usr/bin/env bash
# The runs behind docs/RESULTS.md (issues 22 and 23), on the real DeiT-Tiny and the 200 dev images, sized for two
# CPU cores: two streams of resumable `caap bench` runs, one thread each, side by side. Re-running resumes every
# run (a run refuses to resume with other code: config.json records the commit and a hash of the source).
#
#     benchmarks/evidence.sh STREAM      # STREAM: 1, 2, 3 or 4 (side by side); OUT=runs by default
#     python benchmarks/claims.py --import-runs runs      # per-image scores into benchmarks/results/evidence
#
# Stream 4 is issue 25's study of CAAP's directions (benchmarks/directions.py): fast-mode variants of every direction,
# band and context on the even positions, the chosen ones then exact and fast on the odd positions (judged there
# against deit-top's baselines: caap.bench.evidence_tables), the symmetric one with ROAD on every 4th odd
# position (baselines rerun there), on the grid's cells (grid-fast's baselines) and on stream 3's models.
# Stream 3 is the controlled-evidence benchmark on the demo models and the backbone zoo (ZOO: the folder
# of `python -m caap.data.train --arch NAME --variant simple --max-steps STEPS --minutes 10000` weights,
# NAME_simple.safetensors; STEPS from benchmarks/results/zoo/NAME_simple.json).
#
# Every faithfulness metric is scored on two canvases, one of them never CAAP's context (CAAP's default is
# `mean`): deletion and insertion on the mean, blurred and black canvases, ± perturbation on the mean and blurred
# ones; CAAP also runs with the blurred and black contexts on every 4th image, for the context × canvas table.
# Subsets (stated in RESULTS.md): the strongest fast methods and TIS on all 200 images; the weaker fast methods
# and ROAD (18 sparse solves per map) on every 4th; the slow methods on every 10th (RISE with 1,000 masks); MDA and
# extremal perturbations on every 10th; on the grids the fast methods on all cells, slower ones on every 4th.
set -euo pipefail
STREAM=${1:?usage: benchmarks/evidence.sh 1|2|...|13}
DATA=${CAAP_DATA_DIR:-../shared/data}
OUT=${OUT:-runs}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DEIT=(--model deit_tiny_patch16_224 --weights "$DATA/deit_tiny_patch16_224.safetensors" --target label)
FAITH=deletion:step=14,deletion:step=14:canvas=blur,insertion:step=14,insertion:step=14:canvas=mean,\
positive_perturbation,positive_perturbation:canvas=blur,negative_perturbation,negative_perturbation:canvas=blur
CROSS=deletion:step=14,deletion:step=14:canvas=blur,deletion:step=14:canvas=black,insertion:step=14,\
insertion:step=14:canvas=mean,insertion:step=14:canvas=black
ROBUST=deletion:step=14,deletion:step=14:canvas=blur,insertion:step=14,insertion:step=14:canvas=mean
PUBLISHED=deletion_tis,insertion_tis,positive_perturbation_chefer,negative_perturbation_chefer
LOCAL=pointing_game,pointing_game:resolution=pixel,relevance_mass:resolution=patch,relevance_mass,\
energy_pointing_game:resolution=patch
TOP=caap,caap_fast,gae,transformer_attribution,attnlrp,bidirectional,tis
REST=raw_attention,rollout,gradcam,lrp,saliency,input_x_gradient
MID=caap_adaptive,integrated_gradients,smoothgrad,occlusion,input_insertion,token_occlusion,token_rise
ZOO=${ZOO:-zoo}
ZLOCAL=$LOCAL,relevance_rank,segmentation_miou,segmentation_ap
ALL_FAST=caap,caap_fast,caap_adaptive,gae,transformer_attribution,attnlrp,bidirectional,$REST,\
integrated_gradients,smoothgrad,occlusion,input_insertion,token_occlusion,tis
# the Eva family refuses the linear-rule methods, token subsets (so TIS) and the fast and adaptive modes
EVA_FAST=caap,gae,bidirectional,$REST,integrated_gradients,smoothgrad,occlusion,input_insertion
bench() { caap bench "$@" --compare caap; }

if [ "$STREAM" = 1 ]; then
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods $TOP --metrics $FAITH --out "$OUT/deit-top"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,caap:context=blur,caap:context=black \
        --metrics $CROSS --every 4 --out "$OUT/deit-cross"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,mda,extremal_perturbation --metrics $FAITH \
        --every 10 --out "$OUT/deit-slowest"
elif [ "$STREAM" = 2 ]; then
    bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods $TOP,$REST --metrics $LOCAL --out "$OUT/grid-fast"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,caap_fast,gae,transformer_attribution,attnlrp,\
bidirectional,gradcam --metrics road,road_morf,road_lerf --every 4 --out "$OUT/deit-road"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,$REST --metrics $FAITH --every 4 \
        --out "$OUT/deit-rest"
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods caap,gae,$MID,rise:masks=1000 --metrics $FAITH \
        --every 10 --out "$OUT/deit-slow"
    bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" \
        --methods caap,gae,caap_adaptive,integrated_gradients,smoothgrad,input_insertion --metrics $LOCAL --every 4 \
        --out "$OUT/grid-slow"
elif [ "$STREAM" = 5 ]; then
    # issue 34: the newer rivals on the images of the runs they join (by image id), and the pools completed:
    # LeGrad and AtMan beside deit-top; Grad-CAM on grid-slow's cells; TIS, LeGrad and AtMan beside deit-road
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods legrad,atman --metrics $FAITH --out "$OUT/deit-top-2025"
    caap bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods gradcam,legrad,atman --metrics $LOCAL --every 4 \
        --out "$OUT/grid-slow-2025"
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods tis,legrad,atman --metrics road,road_morf,road_lerf \
        --every 4 --out "$OUT/deit-road-2025"
elif [ "$STREAM" = 6 ]; then
    # issue 34, beside stream 5: ViT-CX (a pixel method, ~2K forwards per map) on deit-top's images and grid-slow's cells
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods vit_cx --metrics $FAITH --out "$OUT/deit-top-vitcx"
    caap bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods vit_cx --metrics $LOCAL --every 4 \
        --out "$OUT/grid-slow-vitcx"
elif [ "$STREAM" = 7 ]; then
    # issue 34's robustness table: TIS under two more k-means seeds on every 20th image (seed 0 is deit-top's)
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods tis:seed=1,tis:seed=2 --every 20 \
        --metrics $ROBUST --out "$OUT/deit-tis-seeds"
elif [ "$STREAM" = 8 ]; then
    # issue 34: the newer rivals on the demo models' images (the zoo's other backbones need their retrained weights)
    for v in simple conjunction; do
        caap bench --model caap-demo-$v --data synthetic:$v --limit 50 --methods legrad,atman,vit_cx --metrics $ZLOCAL \
            --out "$OUT/demo-$v-2025"
    done
elif [ "$STREAM" = 9 ]; then
    # issue 34: the newer rivals in the pools still without them (the grid's fast pool on all 108 cells; the
    # directions' own ROAD images, TIS included). (The zoo's self-trained backbones are not here: retrained with
    # their recorded commands on this CPU, their weights differ from those the zoo's runs used; RESULTS says so.)
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods tis,legrad,atman --metrics road,road_morf,road_lerf \
        --every 4 --offset 1 --out "$OUT/deit-road-directions-2025"
    caap bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods legrad,atman,vit_cx --metrics $LOCAL \
        --out "$OUT/grid-fast-2025"
    for offset in 0 1; do  # ViT-CX on ROAD: deit-road's images, then the directions' own ROAD images
        suffix=$([ $offset = 1 ] && echo -directions || true)
        caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods vit_cx --metrics road,road_morf,road_lerf \
            --every 4 --offset $offset --out "$OUT/deit-road$suffix-vitcx"
    done
elif [ "$STREAM" = 11 ]; then
    # issue 34: LibraGrad (a gradient method: one backward per map) beside every run the other new rivals joined
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods libragrad --metrics $FAITH --out "$OUT/deit-top-libragrad"
    caap bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods libragrad --metrics $LOCAL \
        --out "$OUT/grid-fast-libragrad"
    for offset in 0 1; do  # deit-road's images, then the directions' own ROAD images
        suffix=$([ $offset = 1 ] && echo -directions || true)
        caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods libragrad --metrics road,road_morf,road_lerf \
            --every 4 --offset $offset --out "$OUT/deit-road$suffix-libragrad"
    done
    for v in simple conjunction; do
        caap bench --model caap-demo-$v --data synthetic:$v --limit 50 --methods libragrad --metrics $ZLOCAL \
            --out "$OUT/demo-$v-libragrad"
    done
elif [ "$STREAM" = 12 ]; then
    # issue 34: the published protocols (TIS's insertion/deletion, Chefer et al.'s perturbation) on every 10th image
    # (468 extra forwards per map: ~1.5 h of one core per 10 images; the shipped records hold the first 10 images)
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods $TOP,legrad,atman,vit_cx,libragrad --metrics $PUBLISHED \
        --every 10 --out "$OUT/deit-protocols"
elif [ "$STREAM" = 13 ]; then
    # issue 34's robustness table: TIS with fast-pytorch-kmeans 0.2.2's start (seeds 0-2) on deit-tis-seeds' images;
    # AttnLRP with CP-LRP's attention rule on every 4th image
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --every 20 \
        --methods tis:kmeans=0.2.2,tis:kmeans=0.2.2:seed=1,tis:kmeans=0.2.2:seed=2 --metrics $ROBUST \
        --out "$OUT/deit-tis-kmeans"
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --every 4 --methods attnlrp:attention=constant \
        --metrics $ROBUST --out "$OUT/deit-attnlrp-rules"
    # the 0.2.2 start on more images (every 4th: 50), seed 0
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --every 4 --methods tis:kmeans=0.2.2 --metrics $ROBUST \
        --out "$OUT/deit-tis-kmeans-50"
elif [ "$STREAM" = 4 ]; then
    here=$(dirname "$0")
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --every 2 --methods "$(python "$here/directions.py" variants)" \
        --metrics "$(python "$here/directions.py" metrics)" --out "$OUT/directions-select"
    python "$here/directions.py" choose "$OUT/directions-select"
    confirm() { python "$here/directions.py" confirm "$OUT/directions-select" --for "$1"; }
    # the chosen variants on the odd positions (the confirmation half; the baselines are deit-top's maps)
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --every 2 --offset 1 --methods "$(confirm faith)" \
        --metrics $FAITH --out "$OUT/deit-directions"
    # ROAD on every 4th image from position 1 (odd positions: deit-road's are the selection half), baselines included
    bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods "$(confirm road),gae,transformer_attribution,attnlrp,\
bidirectional,gradcam" --metrics road,road_morf,road_lerf --every 4 --offset 1 --out "$OUT/deit-road-directions"
    caap bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods "$(confirm grid)" --metrics $LOCAL \
        --out "$OUT/grid-directions"
    # the noising variant on the same ROAD images and grid cells (judged against the runs above' baselines)
    caap bench "${DEIT[@]}" --data "$DATA/imagenet-dev" --methods "$(confirm road-noise)" --metrics road,road_morf,\
road_lerf --every 4 --offset 1 --out "$OUT/deit-road-directions-noise"
    caap bench "${DEIT[@]}" --data "grid:$DATA/imagenet-dev" --methods "$(confirm grid-noise)" --metrics $LOCAL \
        --out "$OUT/grid-directions-noise"
    # the demo models and the zoo (6 blocks: the band at the same fractions of the depth), stream 3's images
    zoo() { python "$here/directions.py" confirm "$OUT/directions-select" --for "$1" --depth 6; }
    for kind in zoo zoo-noise; do  # the symmetric variant in X-directions, the noising one in X-directions-noise
        suffix=${kind#zoo}
        for v in simple conjunction; do
            caap bench --model caap-demo-$v --data synthetic:$v --limit 50 --methods "$(zoo $kind)" --metrics $ZLOCAL \
                --out "$OUT/demo-$v-directions$suffix"
        done
        for arch in deit3 reg_avg clip eva; do
            caap bench --model caap-zoo-$arch --weights "$ZOO/${arch}_simple.safetensors" --data synthetic:simple \
                --limit 50 --methods "$(zoo $kind)" --metrics $ZLOCAL --out "$OUT/zoo-$arch-simple-directions$suffix"
        done
    done
else
    for v in simple conjunction; do
        # the demo cards' band is 0:4; 2:4 is the middle third, the default elsewhere
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
fi
