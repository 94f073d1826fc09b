#!/usr/bin/env bash
# Sweep benchmarks: (1) the overhead per run of a sweep (process start, LibTorch and plugin
# load, database rows, heartbeat), (2) a sweep of 8 CPU-bound runs with --jobs 1 and --jobs 2.
# Usage: tools/bench/sweep.sh [BUILD_DIR]   (default build/; needs bin/tlab and the plugins)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
tlab="$PWD/$build/bin/tlab"
work=$(mktemp -d /tmp/tlab-bench-sweep.XXXXXX)
trap 'rm -rf "$work"' EXIT

experiment() {  # $1 = train size, $2 = epochs, $3 = seeds
  cat <<EOF
name = "bench"
seed = 1
device = "cpu"

[target]
plugin = "gaussians"
train_size = $1
val_size = 64
test_size = 64

[backbone]
plugin = "mlp"
hidden = [256, 256]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "scratch"

[train]
epochs = $2
batch_size = 32

[sweep]
seed = [$3]
EOF
}

now() { date +%s.%N; }
gap() {  # mean time from one run's end to the next run's start, from the database $1
  sqlite3 "$1" "SELECT printf('%.3f', avg(g)) FROM (SELECT (julianday(started_at) -
    julianday(lag(ended_at) OVER (ORDER BY id))) * 86400 AS g FROM runs) WHERE g IS NOT NULL"
}
sum_wall() {  # sum of the runs' own wall time (run/wall_seconds) in database $1
  sqlite3 "$1" "SELECT printf('%.3f', sum(value)) FROM summaries WHERE name = 'run/wall_seconds'"
}

echo "== overhead per run: 20 near-empty runs (64 examples, 1 epoch), --jobs 1"
experiment 64 1 "$(seq -s, 1 20)" > "$work/empty.toml"
t0=$(now)
"$tlab" run "$work/empty.toml" --db "$work/empty.db" -j 1 > /dev/null 2>&1
t1=$(now)
inside=$(sum_wall "$work/empty.db")
echo "mean gap between one run's end and the next one's start: $(gap "$work/empty.db") s"
awk -v a="$t0" -v b="$t1" -v in_="$inside" 'BEGIN {
  w = b - a; printf "sweep wall %.2f s, inside the runs %.2f s, overhead %.3f s per run\n", w, in_, (w - in_) / 20 }'

echo "== the same with --spawn fork (no exec: LibTorch stays loaded)"
t0=$(now)
"$tlab" run "$work/empty.toml" --db "$work/fork.db" -j 1 --spawn fork > /dev/null 2>&1
t1=$(now)
inside=$(sum_wall "$work/fork.db")
echo "mean gap between one run's end and the next one's start: $(gap "$work/fork.db") s"
awk -v a="$t0" -v b="$t1" -v in_="$inside" 'BEGIN {
  w = b - a; printf "sweep wall %.2f s, inside the runs %.2f s, overhead %.3f s per run\n", w, in_, (w - in_) / 20 }'
echo "   (both include the supervisor's own start, about 1.5 s, spread over the 20 runs)"

echo "== 8 CPU-bound runs: --jobs 1 vs --jobs 2 (threads per run: cores / jobs)"
experiment 4096 6 "1,2,3,4,5,6,7,8" > "$work/cpu.toml"
for j in 1 2; do
  t0=$(now)
  "$tlab" run "$work/cpu.toml" --db "$work/cpu$j.db" -j $j > /dev/null 2>&1
  t1=$(now)
  awk -v a="$t0" -v b="$t1" -v j=$j 'BEGIN { printf "--jobs %d: %.2f s\n", j, b - a }' | tee -a "$work/times"
done
awk '/--jobs 1/ { a = $3 } /--jobs 2/ { b = $3 } END { printf "speed-up: %.2fx\n", a / b }' "$work/times"
