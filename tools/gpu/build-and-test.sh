#!/usr/bin/env bash
# One call on a lent GPU machine (issue 26; ../shared/gpu/README.md has the machine's facts):
# builds TransferLab against the LibTorch of the machine's PyTorch wheel, runs the *_CUDA tests and
# then the whole suite, runs the GPU benchmarks next to plain PyTorch eager on the same machine,
# and writes OUT/summary.md (and every log) -- all within about 10 minutes.
#
# Prepare here:  echo /.gpu/ >> .git/info/exclude
#                ../shared/gpu/stage-deps.sh .gpu/debs && cp ../shared/gpu/unpack-deps.sh .gpu/
# Device call:   run(command="bash tools/gpu/build-and-test.sh $OUT", carry=[".gpu"])
#
# Usage: tools/gpu/build-and-test.sh OUT [--dry-run] [--build DIR] [--skip-suite]
#   --dry-run     no GPU needed (try it here first): the system's LibTorch and packages, device
#                 cpu, tiny benchmark sizes; the *_CUDA tests skip. Proves the script before it
#                 meets a GPU.
#   --build DIR   use (and update) this build folder instead of configuring a fresh one
#   --skip-suite  run only the *_CUDA tests, not the whole suite
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=${1:?usage: tools/gpu/build-and-test.sh OUT [--dry-run] [--build DIR] [--skip-suite]}
shift
dry=0 build="" suite=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --build) build=$2; shift ;;
    --skip-suite) suite=0 ;;
    *) echo "unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary=$out/summary.md
t_start=$(date +%s)
elapsed() { echo $(($(date +%s) - t_start)); }
note() { echo "$*" | tee -a "$summary"; }
: >"$summary"
py=python3
[ $dry -eq 1 ] && py=/usr/bin/python3  # Debian's PyTorch here; the wheel's python on the GPU

note "# GPU build, tests and benchmarks ($(date -u +%Y-%m-%d' '%H:%M' UTC'))"
note ""
note "- mode: $([ $dry -eq 1 ] && echo 'dry run (no GPU: device cpu, tiny sizes)' || echo 'GPU')"
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null |
  head -1 || true)
note "- GPU: ${gpu:-none}"
note "- cores: $(nproc); PyTorch: $($py -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)"

# 1. Dependencies and configuration.
if [ -z "$build" ]; then
  build=$([ $dry -eq 1 ] && echo /tmp/tlab-gpu-dry || echo "$root/build-gpu")
  prefix=""
  if [ -d .gpu/debs ] && [ $dry -eq 0 ]; then
    bash .gpu/unpack-deps.sh .gpu/debs /tmp/deps >"$out/deps.log" 2>&1
    # shellcheck disable=SC1090
    source <(grep '^export ' "$out/deps.log")
    prefix="$($py -c 'import torch;print(torch.utils.cmake_prefix_path)');$CMAKE_PREFIX_PATH"
  fi
  args=(-S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release)
  [ -n "$prefix" ] && args+=("-DCMAKE_PREFIX_PATH=$prefix")
  [ -n "${DEPS_PREFIX:-}" ] && args+=("-DSQLite3_INCLUDE_DIR=$DEPS_PREFIX/include"
    "-DSQLite3_LIBRARY=$DEPS_PREFIX/lib/x86_64-linux-gnu/libsqlite3.so")
  [ $dry -eq 0 ] && args+=(-DTORCH_CUDA_ARCH_LIST=9.0)
  cmake "${args[@]}" >"$out/configure.log" 2>&1 || { note "- configure FAILED (configure.log)"; exit 1; }
fi
if ! cmake --build "$build" -j "$(nproc)" >"$out/build.log" 2>&1; then
  note "- build FAILED after $(elapsed) s (build.log: $(grep -m1 -E 'error' "$out/build.log" || true))"
  exit 1
fi
note "- build: $build, done at $(elapsed) s"

# 2. Tests: the CUDA ones first (they skip without a GPU), then the whole suite.
(cd "$build" && ctest -R '_CUDA' --output-on-failure --timeout 300 >"$out/ctest-cuda.log" 2>&1) &&
  cuda_ok=passed || cuda_ok=FAILED
note "- *_CUDA tests: $cuda_ok ($(grep -E 'tests passed|tests failed' "$out/ctest-cuda.log" | tail -1)); skipped: $(grep -c 'Skipped' "$out/ctest-cuda.log" || true)"
if [ $suite -eq 1 ]; then
  (cd "$build" && ctest -j "$(nproc)" --timeout 300 >"$out/ctest.log" 2>&1) && all=passed ||
    all=FAILED
  note "- whole suite: $all ($(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1)), done at $(elapsed) s"
fi

# 3. Benchmarks: tlab and plain PyTorch eager on the same device, the same shapes and settings.
tlab="$build/bin/tlab"
work=$(mktemp -d /tmp/tlab-gpu-bench.XXXXXX)
device=$([ $dry -eq 1 ] && echo cpu || echo cuda)
if [ $dry -eq 1 ]; then n_cnn=512 n_res=16 side=64 epochs=1 res_batch=8 cnn_batch=64
else n_cnn=60000 n_res=1280 side=224 epochs=3 res_batch=128 cnn_batch=256; fi
precision=$([ $dry -eq 1 ] && echo fp32 || echo bf16)

note ""
note "## Matrix-multiply peak"
$py - "$device" 2>&1 <<'PY' | tee -a "$summary" || true
import sys, time, torch
dev = sys.argv[1]
n = 8192 if dev == "cuda" else 1024
for dtype in (torch.float32, torch.bfloat16):
    a = torch.randn(n, n, device=dev, dtype=dtype); b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3): a @ b
    if dev == "cuda": torch.cuda.synchronize()
    reps = 20 if dev == "cuda" else 3
    t = time.perf_counter()
    for _ in range(reps): a @ b
    if dev == "cuda": torch.cuda.synchronize()
    s = (time.perf_counter() - t) / reps
    print(f"- {dtype}: {2 * n ** 3 / s / 1e12:.1f} TFLOP/s ({n}x{n}, {dev})")
PY

# Images for the ResNets: an image folder of small PNGs that the imagefolder plugin resizes.
$py - "$work/images" "$n_res" >"$out/images.log" 2>&1 <<'PY'
import os, sys
import numpy as np
from PIL import Image
root, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    d = os.path.join(root, f"c{i % 10}")
    os.makedirs(d, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(f"{d}/{i}.png")
PY

tlab_rate() {  # experiment file, overrides...: samples/s of the target stage's training loop
  local exp=$1; shift
  local db="$work/$(basename "$exp" .toml)-$RANDOM.db"
  "$tlab" run "$exp" --db "$db" "$@" >>"$out/bench-tlab.log" 2>&1 || { echo "failed"; return; }
  sqlite3 "$db" "SELECT printf('%.0f', value) FROM summaries WHERE name = 'target/train/samples_per_second'"
}
cat >"$work/cnn.toml" <<EOT
name = "gpu_cnn"
seed = 1
device = "$device"
[target]
plugin = "digits"
train_size = $n_cnn
val_size = 0
test_size = 256
[backbone]
plugin = "cnn"
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = $epochs
batch_size = $cnn_batch
precision = "$precision"
channels_last = true
EOT
cat >"$work/resnet.toml" <<EOT
name = "gpu_resnet"
seed = 1
device = "$device"
[target]
plugin = "imagefolder"
path = "$work/images"
size = $side
channels = 3
val_fraction = 0.0
test_fraction = 0.0
[backbone]
plugin = "resnet"
depth = 18
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = $epochs
batch_size = $res_batch
precision = "$precision"
channels_last = true
EOT
note ""
note "## Training throughput: tlab against plain PyTorch eager ($precision, channels-last, $device)"
note ""
note "| workload | batch | tlab samples/s | PyTorch samples/s | tlab / PyTorch |"
note "|---|---:|---:|---:|---:|"
bench_row() {  # name, batch, pytorch args, tlab experiment + overrides
  local name=$1 batch=$2 pyargs=$3; shift 3
  local t p
  t=$(tlab_rate "$@")
  p=$($py tools/bench/perf/pytorch_loop.py $pyargs --device "$device" --precision "$precision" \
    --channels-last --batch "$batch" 2>>"$out/bench-pytorch.log" | tail -1 |
    $py -c 'import json,sys; print(round(json.loads(sys.stdin.read())["samples_per_second"]))' 2>/dev/null ||
    echo failed)
  ratio=$($py -c "import sys; t, p = sys.argv[1:]; print(f'{float(t) / float(p):.2f}')" "$t" "$p" 2>/dev/null || echo "-")
  note "| $name | $batch | $t | $p | $ratio |"
}
bench_row "small CNN 1x28x28" "$cnn_batch" "--workload cnn --train $n_cnn --epochs $epochs" "$work/cnn.toml"
bench_row "ResNet-18 3x${side}x${side}" "$res_batch" \
  "--workload resnet18 --train $n_res --epochs $epochs --image-size $side" "$work/resnet.toml"
bench_row "ResNet-50 3x${side}x${side}" "$res_batch" \
  "--workload resnet50 --train $n_res --epochs $epochs --image-size $side" "$work/resnet.toml" \
  backbone.depth=50

note ""
note "## Small runs sharing the device (--jobs)"
note ""
note "| jobs | runs | seconds | runs per minute |"
note "|---:|---:|---:|---:|"
for jobs in 1 2 4 8; do
  [ $dry -eq 1 ] && [ "$jobs" -gt 2 ] && continue
  t0=$(date +%s.%N)
  "$tlab" run "$work/cnn.toml" --db "$work/jobs-$jobs.db" -j "$jobs" -m seed=1,2,3,4,5,6,7,8 \
    target.train_size=2048 train.epochs=2 >>"$out/bench-jobs.log" 2>&1 || true
  t1=$(date +%s.%N)
  $py -c "import sys; a, b = map(float, sys.argv[1:]); print(f'| $jobs | 8 | {b - a:.1f} | {8 * 60 / (b - a):.1f} |')" "$t0" "$t1" | tee -a "$summary"
done
rm -rf "$work"
note ""
note "done in $(elapsed) s"
