#!/usr/bin/env bash
# The same sweep locally (-j 2) and on a one-node SLURM cluster (array parallelism 2, --wait,
# collect included): wall time, and SLURM's latency from submission to a task's start.
# Usage: tools/bench/slurm.sh [BUILD_DIR] [RUNS]   (root; slurm-wlm and munge installed)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
runs=${2:-12}
tlab="$PWD/$build/bin/tlab"
work=$(mktemp -d /tmp/tlab-bench-slurm.XXXXXX)
cluster=$(mktemp -d /tmp/tlbs.XXXXXX)
trap 'tools/slurm/local-cluster.sh stop "$cluster" >/dev/null 2>&1 || true; rm -rf "$work" "$cluster"' EXIT

cat >"$work/exp.toml" <<TOML
name = "bench"
seed = 1
device = "cpu"

[target]
plugin = "gaussians"
train_size = 2048
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
epochs = 4
batch_size = 32

[sweep]
seed = [$(seq -s, 1 "$runs")]
TOML

now() { date +%s.%N; }
t0=$(now)
tools/slurm/local-cluster.sh start "$cluster" >/dev/null
t1=$(now)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "cluster start: %.2f s\n", b - a }'
eval "$(tools/slurm/local-cluster.sh env "$cluster")"

echo "== $runs runs, 1 thread each, 2 at once"
t0=$(now)
"$tlab" run "$work/exp.toml" --db "$work/local/results.db" -j 2 --threads 1 >/dev/null 2>&1
t1=$(now)
"$tlab" run "$work/exp.toml" --db "$work/slurm/results.db" -j 2 --launcher slurm --wait \
  >/dev/null 2>&1
t2=$(now)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
  printf "local  (-j 2):                          %.2f s\n", b - a
  printf "slurm  (%%2, --wait, collect included): %.2f s (%.2fx the local wall)\n", c - b, (c - b) / (b - a) }'
finished() { sqlite3 "$1" "SELECT count(*) FROM runs WHERE status = 'finished'"; }
echo "finished runs: local $(finished "$work/local/results.db"), slurm $(finished "$work/slurm/results.db")"
sqlite3 "$work/slurm/results.db" "SELECT printf('first two tasks: %.2f s from submission to start', avg((julianday(started_at) - julianday(created_at)) * 86400)) FROM (SELECT * FROM runs ORDER BY started_at LIMIT 2)"
for where in local slurm; do
  sqlite3 "$work/$where/results.db" "SELECT printf('$where: mean wall inside a run %.2f s', avg(value)) FROM summaries WHERE name = 'run/wall_seconds'"
done
t0=$(now)
tools/slurm/local-cluster.sh stop "$cluster"
t1=$(now)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "cluster stop: %.2f s\n", b - a }'
