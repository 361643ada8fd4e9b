#!/usr/bin/env bash
# The CUDA path end to end, then the GPU throughput against d2l's published figures (< 5 min).
#
#   benchmarks/gpu_check.sh                 # from the repository root, on a machine with a GPU
#   PYTHON=.venv/bin/python OUT=/tmp/gpu benchmarks/gpu_check.sh
#
# 1) train LeNet on the embedded digits on cuda:0 (2 epochs), resume it to 3, evaluate it
# 2) the same set forced to stream (CNNLAB_DATA_PLACEMENT=stream: pinned host batches, copied
#    while the previous one trains): its metrics are printed beside the in-memory run's
# 3) bf16 + channels-last + torch.compile on ResNet-18 (1 epoch)
# 4) --gpus 0: the torchrun launcher with one process
# 5) throughput, data on the device, cnnlab against the textbook pipeline (4 workers):
#    AlexNet (alexnet_2012, 224 px, batch 128), d2l 3,942 examples/s;
#    ResNet-18 (96 px, batch 256), d2l 5,033 examples/s
# Every command's output goes to the screen and to $OUT/gpu_check.log; any failure stops it.
set -euo pipefail

PYTHON=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
RUNS="$OUT/runs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

cnnlab() { "$PYTHON" -m cnnlab "$@"; }
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }

step "the GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name(0))"

step "1) train, resume, eval on cuda:0"
cnnlab train lenet --epochs 2 --gpu 0 --name lenet-gpu --runs-dir "$RUNS"
cnnlab train --resume "$RUNS/lenet-gpu" --epochs 3
cnnlab eval "$RUNS/lenet-gpu"

step "2) the same run streamed from host memory"
CNNLAB_DATA_PLACEMENT=stream cnnlab train lenet --epochs 3 --gpu 0 --name lenet-gpu-streamed --runs-dir "$RUNS"
paste -d'|' "$RUNS/lenet-gpu/metrics.csv" "$RUNS/lenet-gpu-streamed/metrics.csv"

step "3) bf16, channels-last, torch.compile"
cnnlab train resnet18 --resize 32 --epochs 1 --gpu 0 --amp bf16 --channels-last --compile \
    --name resnet18-compiled --runs-dir "$RUNS"

step "4) --gpus 0 (torchrun, one process)"
cnnlab train lenet --epochs 1 --gpus 0 --name lenet-torchrun --runs-dir "$RUNS"

step "5) throughput with the data on the device"
"$PYTHON" benchmarks/train_throughput.py alexnet_2012 --size 224 --batch-size 128 --steps 30 --repeats 3 \
    --workers 4 --device cuda --cnnlab default plain
"$PYTHON" benchmarks/train_throughput.py resnet18 --size 96 --batch-size 256 --steps 30 --repeats 3 \
    --workers 4 --device cuda --cnnlab default plain

step "done: d2l's published figures are 3,942 (AlexNet) and 5,033 (ResNet-18) examples/s; log in $OUT/gpu_check.log"
