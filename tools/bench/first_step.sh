#!/usr/bin/env bash
# A run's start-up: run/first_step_seconds (from the run's process start to its first training
# step) of 5 runs of tiny.toml with --spawn fork and with --spawn exec. Given two tlab binaries,
# both side by side, in turn, two rounds, on the same machine at the same time: for "per-run
# start-up unchanged or better" after a change to the front or the engine (docs/benchmarks.md).
# Usage: tools/bench/first_step.sh TLAB            (one binary, one round; startup.sh uses it)
#        tools/bench/first_step.sh OLD_TLAB NEW_TLAB   (e.g. an older build's bin/tlab)
set -euo pipefail
[ $# -eq 1 ] || [ $# -eq 2 ] || { echo "usage: $0 TLAB | OLD_TLAB NEW_TLAB" >&2; exit 2; }
work=$(mktemp -d /tmp/tlab-first-step.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$(dirname "$0")/tiny.toml" "$work/exp.toml"
echo "| round | binary | spawn | run/first_step_seconds (5 runs): min-max, median |"
echo "|---|---|---|---|"
if [ $# -eq 1 ]; then binaries=(this); rounds=(1); else binaries=(old new); rounds=(1 2); fi
for round in "${rounds[@]}"; do
  for which in "${binaries[@]}"; do
    tlab=$1; [ "$which" = new ] && tlab=$2
    for spawn in fork exec; do
      db="$work/$round-$which-$spawn.db"
      "$tlab" run "$work/exp.toml" -m seed=11,12,13,14,15 --spawn "$spawn" --db "$db" \
        > /dev/null 2>&1
      sqlite3 "$db" "select '| $round | $which | $spawn | ' || printf('%.3f', min(value)) || '-' ||
        printf('%.3f', max(value)) || ' s, ' || (select printf('%.3f', value) from summaries
        where name = 'run/first_step_seconds' order by value limit 1 offset 2) || ' s |'
        from summaries where name = 'run/first_step_seconds'"
    done
  done
done
