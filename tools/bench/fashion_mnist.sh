#!/usr/bin/env bash
# Full Fashion-MNIST training (Debian's dataset-fashion-mnist: 60,000 training and 10,000 test
# images), tlab against plain PyTorch on the same files (docs/benchmarks.md, "Real data"): the
# small CNN (backbone cnn + linear_head), Adam lr 1e-3, batch 64, EPOCHS epochs (default 5),
# 2 intra-op threads, the environment of tools/bench/perf/run.sh. Prints samples/s of the
# training steps, wall time of the whole process and test accuracy for each.
#   tools/bench/fashion_mnist.sh [BUILD_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
OUT=${2:-/tmp/tlab_fashion}
EPOCHS=${EPOCHS:-5}
DATA=/usr/share/datasets/fashion-mnist
mkdir -p "$OUT"
rm -f "$OUT"/fashion.db*
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864
cat > "$OUT/fashion.toml" <<TOML
name = "fashion_full"
seed = 1
device = "cpu"
[target]
plugin = "idx"
train_images = "$DATA/train-images-idx3-ubyte.gz"
train_labels = "$DATA/train-labels-idx1-ubyte.gz"
test_images = "$DATA/t10k-images-idx3-ubyte.gz"
test_labels = "$DATA/t10k-labels-idx1-ubyte.gz"
val_fraction = 0.0
[backbone]
plugin = "cnn"
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = $EPOCHS
batch_size = 64
optimizer = "adam"
lr = 0.001
TOML
t0=$EPOCHREALTIME
"$BUILD/bin/tlab" --plugin-path "$BUILD/plugins" run "$OUT/fashion.toml" --db "$OUT/fashion.db" \
  --threads 2 > "$OUT/tlab.log" 2>&1
tlab_wall=$(echo "$EPOCHREALTIME - $t0" | bc)
t0=$EPOCHREALTIME
/usr/bin/python3 tools/bench/perf/pytorch_loop.py --workload cnn --threads 2 --epochs "$EPOCHS" \
  --batch 64 --train 60000 --fashion "$DATA" > "$OUT/pytorch.json"
py_wall=$(echo "$EPOCHREALTIME - $t0" | bc)
/usr/bin/python3 - "$OUT" "$tlab_wall" "$py_wall" <<'PY'
import json, sqlite3, sys
out, tlab_wall, py_wall = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
con = sqlite3.connect(f"{out}/fashion.db")
s = dict(con.execute("SELECT name, value FROM summaries WHERE run_id = 1"))
p = json.load(open(f"{out}/pytorch.json"))
print("| impl | train examples | epochs | samples/s (training steps) | training s | wall s | test acc |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
print(f"| tlab | {int(s['target/train/examples'])} | {p['epochs']} | "
      f"{s['target/train/samples_per_second']:.0f} | {s['target/train/seconds']:.1f} | "
      f"{tlab_wall:.1f} | {s['target/test/acc']:.4f} |")
print(f"| PyTorch {p['libtorch']} | {p['train']} | {p['epochs']} | {p['samples_per_second']:.0f} | "
      f"{p['train_seconds']:.1f} | {py_wall:.1f} | {p['test_acc']:.4f} |")
PY
