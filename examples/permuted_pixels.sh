#!/usr/bin/env bash
# The permuted-pixels experiment by hand (what 'cnnlab experiment permuted-pixels' does):
# a small CNN and an MLP of similar size, each trained on the images as they are and with their
# pixel positions shuffled by one fixed permutation; then one table says what the shuffle cost.
#
#   examples/permuted_pixels.sh                    # the embedded digits at 8x8, 5 epochs per run
#   EPOCHS=10 examples/permuted_pixels.sh --lr 0.005
#
# Settings (environment variables):
#   EPOCHS      epochs per run                           (default: 5)
#   PERMUTATION seed of the one permutation of the pixels (default: 0)
#   RUNS_DIR    where the runs go                         (default: runs/permuted-pixels-<time>)
# Any arguments are passed on to every 'cnnlab train' (e.g. --seed 1, --batch-size 32).
set -euo pipefail

EPOCHS=${EPOCHS:-5}
PERMUTATION=${PERMUTATION:-0}
RUNS_DIR=${RUNS_DIR:-runs/permuted-pixels-$(date +%Y%m%d-%H%M%S)}

for model in small_cnn small_mlp; do
    # the data set's own 8x8 images: a shuffle undone by resizing would prove nothing
    cnnlab train "$model" --data digits --epochs "$EPOCHS" --runs-dir "$RUNS_DIR" \
        --name "$model-original" "$@"
    cnnlab train "$model" --data digits --epochs "$EPOCHS" --runs-dir "$RUNS_DIR" \
        --name "$model-permuted" --permute-pixels "$PERMUTATION" "$@"
done

# final_val_acc of <model>-original against <model>-permuted is the answer
cnnlab compare --runs-dir "$RUNS_DIR" --sort name --out "$RUNS_DIR/compare.md"
cnnlab compare --runs-dir "$RUNS_DIR" --sort name
