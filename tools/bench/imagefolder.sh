#!/usr/bin/env bash
# Image-folder data path: decoding throughput (images/s, 1 and 2 workers) and a training run of
# the small CNN on the same JPEG folder, resident (decoded once) and streamed (decoded every
# epoch by the prefetch workers), with the time training waited for data.
# Usage: tools/bench/imagefolder.sh [BUILD_DIR] [IMAGES]   (default build/, 4000 images)
# Needs /usr/bin/python3 with PIL (python3-pil) to write the images.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
images=${2:-4000}
tlab="$PWD/$build/bin/tlab"
work=$(mktemp -d /tmp/tlab-bench-imagefolder.XXXXXX)
trap 'rm -rf "$work"' EXIT

/usr/bin/python3 - "$work/imgs" "$images" <<'PY'
import os, random, sys
from PIL import Image
root, n = sys.argv[1], int(sys.argv[2])
random.seed(0)
for i in range(n):
    c = i % 10
    os.makedirs(f"{root}/{c}", exist_ok=True)
    im = Image.new("RGB", (64, 64), (25 * c, 128, 255 - 25 * c))
    px = im.load()
    for _ in range(200):
        px[random.randrange(64), random.randrange(64)] = tuple(random.randrange(256) for _ in range(3))
    im.save(f"{root}/{c}/{i:05d}.jpg", quality=90)
PY
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "folder: $images JPEG images of 64x64 RGB in 10 classes ($(du -sh "$work/imgs" | cut -f1))"

experiment() {  # $1 = extra [target] lines, $2 = epochs
  cat <<EOF
name = "bench-imagefolder"
seed = 1
device = "cpu"
[target]
plugin = "imagefolder"
path = "$work/imgs"
size = 32
val_fraction = 0.1
test_fraction = 0.1
$1
[backbone]
plugin = "cnn"
channels = [16, 32]
feature_dim = 64
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = $2
batch_size = 64
EOF
}

summary() {  # $1 = db, $2 = metric ("n/a" when the run has none)
  local v
  v=$(sqlite3 "$1" "SELECT printf('%.3f', value) FROM summaries WHERE name = '$2' ORDER BY run_id DESC LIMIT 1")
  echo "${v:-n/a}"
}

for w in 1 2; do
  # Decoding alone: the resident load, timed by the runner (summary target/data/load_seconds).
  experiment "workers = $w" 1 > "$work/decode.toml"
  "$tlab" run "$work/decode.toml" --db "$work/d$w.db" --threads 2 > /dev/null 2>&1
  secs=$(summary "$work/d$w.db" target/data/load_seconds)
  echo "decode (resident load), workers=$w: $secs s = $(awk -v n="$images" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') images/s"
done

for mode in resident streamed; do
  extra="workers = 2"
  [ "$mode" = streamed ] && extra="workers = 2
resident_max_mb = 0"
  experiment "$extra" 3 > "$work/$mode.toml"
  start=$(date +%s.%N)
  "$tlab" run "$work/$mode.toml" --db "$work/$mode.db" --threads 2 > "$work/$mode.log" 2>&1
  end=$(date +%s.%N)
  echo "$mode: load $(summary "$work/$mode.db" target/data/load_seconds) s, 3 epochs, whole" \
    "process $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s;" \
    "test acc $(summary "$work/$mode.db" target/test/acc);" \
    "waited for data $(summary "$work/$mode.db" target/train/data_wait_seconds) s;" \
    "train $(summary "$work/$mode.db" target/train/examples) images/epoch"
done
