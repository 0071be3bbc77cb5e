#!/usr/bin/env bash
# The GPU checks in one go, on a machine where PyTorch sees a GPU: the device tests (GPU results
# equal CPU results), then the speed benchmarks with --device cuda, each against its peer measured
# in the same run, then a short accuracy training to time epochs on the GPU.
#
#   bash benchmarks/gpu_suite.sh OUT_DIR [THREADS] [TRAIN_WALLTIME_S] [ACCURACY_DATA_DIR]
#
# ACCURACY_DATA_DIR holds train_400.extxyz and heldout_100.extxyz from an earlier
# benchmarks/train_accuracy.py run (labelled again with EMT when absent). Each step has its own
# time limit and log (OUT_DIR/*.log), so one failing step does not hide the others.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [THREADS] [TRAIN_WALLTIME_S] [ACCURACY_DATA_DIR]}
threads=${2:-8}
train_s=${3:-120}
data=${4:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCHANI_NO_WARN_EXTENSIONS=1
step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date +%T))"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]}"
}
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
step tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_devices.py
step sampler_speed 120 python3 benchmarks/sampler_speed.py --device cuda --threads "$threads"
step model_speed 100 python3 benchmarks/model_speed.py --device cuda --threads "$threads"
step train_speed 100 python3 benchmarks/train_speed.py --device cuda --threads "$threads" --steps 2
acc="$out/accuracy"
mkdir -p "$acc"
if [ -n "$data" ]; then cp "$data"/train_400.extxyz "$data"/heldout_100.extxyz "$acc"/; fi
step train_accuracy $((train_s + 90)) python3 benchmarks/train_accuracy.py --device cuda --threads "$threads" \
    --out "$acc" --l0 4.0 --batch-size 8 --patience 15 --epochs 2000 --max-walltime-s "$train_s"
rm -f "$acc"/*.extxyz "$acc"/model/checkpoint.pt
