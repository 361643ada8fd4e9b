#!/usr/bin/env bash
# Train several architectures on the same data with the same budget, then compare them:
# accuracy against parameters, MACs and time, as a table and two figures.
#
#   examples/compare_architectures.sh                  # 4 small models on the embedded digits,
#                                                      # 5 epochs each: a few minutes on a laptop CPU
#   MODELS="lenet_relu mnist_resnet mnist_inception" EPOCHS=10 DATA=fashion-mnist \
#       examples/compare_architectures.sh --device cuda
#
# Settings (environment variables):
#   MODELS      zoo models to train, space-separated  (default: mlp lenet lenet_relu mnist_resnet)
#   DATA        data set for every run                (default: digits, embedded, no download)
#   EPOCHS      epochs per run                         (default: 5)
#   BATCH_SIZE  batch size per run                     (default: 64)
#   SEED        seed per run                           (default: 0)
#   RUNS_DIR    where the runs go                      (default: runs/compare-<data>-<time>)
# Any arguments are passed on to every 'cnnlab train' (e.g. --device cuda, --lr 0.05).
set -euo pipefail

MODELS=${MODELS:-"mlp lenet lenet_relu mnist_resnet"}
DATA=${DATA:-digits}
EPOCHS=${EPOCHS:-5}
BATCH_SIZE=${BATCH_SIZE:-64}
SEED=${SEED:-0}
# a fresh directory each time, so a second comparison never mixes with or overwrites the first
RUNS_DIR=${RUNS_DIR:-runs/compare-$(basename "$DATA")-$(date +%Y%m%d-%H%M%S)}

for model in $MODELS; do
    echo "== $model on $DATA: $EPOCHS epochs, batch $BATCH_SIZE, seed $SEED"
    cnnlab train "$model" --data "$DATA" --epochs "$EPOCHS" --batch-size "$BATCH_SIZE" \
        --seed "$SEED" --runs-dir "$RUNS_DIR" --name "$model" "$@"
done

# the table on screen, a Markdown copy for reports, and the curves + accuracy-vs-cost figures
cnnlab compare --runs-dir "$RUNS_DIR" --sort best_val_acc --plot "$RUNS_DIR/compare.png"
cnnlab compare --runs-dir "$RUNS_DIR" --sort best_val_acc --out "$RUNS_DIR/compare.md"
