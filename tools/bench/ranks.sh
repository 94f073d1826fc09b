#!/usr/bin/env bash
# One run on several processes (issue 28, docs/performance.md): the same training on 1 and 2
# Gloo ranks of 1 thread each, next to the other uses of 2 cores: one process with 2 threads, and
# `--jobs 2` of two independent runs of 1 thread each. Workloads as tools/bench/perf/run.sh's:
#   mlp      - mlp [512, 256] on `gaussians` dim 784, batch 128, 20000 examples x 3 epochs;
#   resnet18 - torchvision's ResNet-18 on `cifar` (a CIFAR-10 binary file of random bytes),
#              batch 32, 1024 examples x 2 epochs.
# samples/s = the run's target/train/samples_per_second (the training loops only; for --jobs 2
# the sum over the two runs); scaling efficiency = samples/s on 2 ranks / (2 x on 1 rank).
# Usage: tools/bench/ranks.sh [BUILD] [OUT] [REPS]   (defaults: build, a temporary folder, 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
work=${2:-$(mktemp -d /tmp/tlab-ranks.XXXXXX)}
reps=${3:-3}
mkdir -p "$work"
tlab="$PWD/$build/bin/tlab"
py=/usr/bin/python3
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

"$py" - "$work" <<'PY'
import os, random, sys
work = sys.argv[1]
rng = random.Random(0)
for name, count in (("data_batch_1.bin", 1024), ("test_batch.bin", 256)):
    with open(os.path.join(work, name), "wb") as f:
        for _ in range(count):
            f.write(bytes([rng.randrange(10)]) + rng.randbytes(3072))
PY

experiment() {  # $1 = workload
  case $1 in
    mlp) cat <<EOF
name = "ranks-mlp"
seed = 1
device = "cpu"
[target]
plugin = "gaussians"
dim = 784
num_classes = 10
train_size = 20000
val_size = 0
test_size = 256
[backbone]
plugin = "mlp"
hidden = [512, 256]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 3
batch_size = 128
optimizer = "adam"
lr = 1e-3
EOF
    ;;
    resnet18) cat <<EOF
name = "ranks-resnet18"
seed = 1
device = "cpu"
[target]
plugin = "cifar"
dir = "$work"
train_files = ["data_batch_1.bin"]
test_file = "test_batch.bin"
val_fraction = 0.0
[backbone]
plugin = "resnet"
depth = 18
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 2
batch_size = 32
optimizer = "adam"
lr = 1e-3
EOF
    ;;
  esac
}

# samples/s of the runs in database $1 (summed), and their wall time (the slowest run).
measure() {
  sqlite3 "$1" "SELECT printf('%.0f', SUM(value)) FROM summaries WHERE name = 'target/train/samples_per_second'"
}

printf 'workload\tsetting\trep\tsamples_per_s\twall_s\n' > "$work/raw.tsv"
for w in mlp resnet18; do
  experiment "$w" > "$work/$w.toml"
  for rep in $(seq 1 "$reps"); do
    for setting in "1 rank, 1 thread" "2 ranks, 1 thread each" "1 process, 2 threads" \
                   "--jobs 2, 1 thread each"; do
      db="$work/$w-$rep-${setting// /_}.db"
      rm -f "$db"
      case $setting in
        "1 rank, 1 thread") args=(--threads 1) ;;
        "2 ranks, 1 thread each") args=(--threads 1 --nproc 2) ;;
        "1 process, 2 threads") args=(--threads 2) ;;
        "--jobs 2, 1 thread each") args=(--threads 1 -j 2 -m seed=1,2) ;;
      esac
      t0=$(date +%s.%N)
      (cd "$work" && "$tlab" run "$w.toml" --db "$db" "${args[@]}" > "$db.log" 2>&1)
      t1=$(date +%s.%N)
      printf '%s\t%s\t%s\t%s\t%.1f\n' "$w" "$setting" "$rep" "$(measure "$db")" \
        "$(echo "$t1 - $t0" | bc)" >> "$work/raw.tsv"
    done
  done
done

"$py" - "$work/raw.tsv" <<'PY' | tee "$work/report.md"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
settings = ["1 rank, 1 thread", "2 ranks, 1 thread each", "1 process, 2 threads",
            "--jobs 2, 1 thread each"]
print("| workload | setting | samples/s (median, min-max) | vs 1 rank | wall s (median) |")
print("|---|---|---|---|---|")
for w in ("mlp", "resnet18"):
    base = None
    for s in settings:
        v = [float(r["samples_per_s"]) for r in rows if r["workload"] == w and r["setting"] == s]
        t = [float(r["wall_s"]) for r in rows if r["workload"] == w and r["setting"] == s]
        if not v:
            continue
        m = statistics.median(v)
        if base is None:
            base = m
        print(f"| {w} | {s} | {m:,.0f} ({min(v):,.0f}-{max(v):,.0f}) | {m / base:.2f}x | "
              f"{statistics.median(t):.1f} |")
PY
echo "raw: $work/raw.tsv"
