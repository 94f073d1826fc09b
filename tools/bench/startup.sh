#!/usr/bin/env bash
# Start-up of the commands that do not train (issue 19): `tlab --version`, `tlab results list`
# on a 1,000-run database, `tlab sweep list`, `tlab run --help`; next to loading LibTorch alone
# (bench_bare_loop --help, what every tlab command paid before the front/engine split) and
# sqlite3 on the same database. Median (min-max) of N runs each, wall clock.
# Then a run's start-up: run/first_step_seconds of a small sweep with --spawn fork and exec.
# Usage: tools/bench/startup.sh [BUILD_DIR] [N]   (default build, 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
n=${2:-10}
tlab=$PWD/$build/bin/tlab
work=$(mktemp -d /tmp/tlab-startup.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A 1,000-run database: a 10-run sweep (gaussians, mlp, scratch over 10 seeds), each run copied
# 99 times with its params, summaries, metrics and plugin rows.
cp tools/bench/tiny.toml "$work/exp.toml"
"$tlab" run "$work/exp.toml" -m seed=1,2,3,4,5,6,7,8,9,10 \
  --db "$work/base.db" > /dev/null 2>&1 || true
cp "$work/base.db" "$work/big.db"
base=$(sqlite3 "$work/big.db" "select max(id) from runs")
sql="pragma foreign_keys = off; begin;"
for k in $(seq 1 $(( 1000 / base - 1 ))); do
  off=$(( k * base ))
  sql+="
create temp table r as select * from runs where id <= $base; update r set id = id + $off, uuid = uuid || '-$k';
insert into runs select * from r; drop table r;"
  for t in params summaries metrics run_plugins; do
    sql+="
create temp table x as select * from $t where run_id <= $base; update x set run_id = run_id + $off;
insert into $t select * from x; drop table x;"
  done
done
sql+=" commit;"
sqlite3 "$work/big.db" "$sql"
runs=$(sqlite3 "$work/big.db" "select count(*) from runs")

median() {  # label, command...: median (min-max) of $n wall-clock runs, in ms
  # Timed with bash's $EPOCHREALTIME: no process is started to read the clock, so the time is
  # the command's own (fork, exec, run, exit), not a `date` process's as well.
  local label=$1; shift
  local times=()
  for _ in $(seq "$n"); do
    local t0 t1
    t0=$EPOCHREALTIME; "$@" > /dev/null 2>&1 || true; t1=$EPOCHREALTIME
    times+=($(( 10#${t1//[.,]/} - 10#${t0//[.,]/} )))  # microseconds (any locale's separator)
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v label="$label" '
    { v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
      printf "| %s | %.1f ms | %.1f-%.1f ms |\n", label, m / 1000, v[1] / 1000, v[NR] / 1000 }'
}

echo "database: $runs runs, $(du -k "$work/big.db" | cut -f1) KiB; $n runs each, $(nproc) cores"
echo
echo "| command | median | min-max |"
echo "|---|---|---|"
median "tlab --version" "$tlab" --version
median "tlab --help" "$tlab" --help
median "tlab results list ($runs runs)" "$tlab" results list --db "$work/big.db"
median "tlab results list --format json ($runs runs)" "$tlab" results list --format json --db "$work/big.db"
median "tlab results compare --by strategy.plugin ($runs runs)" "$tlab" results compare --by strategy.plugin --db "$work/big.db"
median "tlab sweep list" "$tlab" sweep list --db "$work/big.db"
median "tlab run --help EXP" "$tlab" run --help "$work/exp.toml"
median "sqlite3: select the runs table" sqlite3 "$work/big.db" "select * from runs"
median "loading LibTorch alone (bench_bare_loop --help)" "$PWD/$build/bin/bench_bare_loop" --help
median "tlab plugins (opens the engine and every plugin)" "$tlab" plugins

# A run's start-up: from its process's start to its first training step.
echo
tools/bench/first_step.sh "$tlab"
