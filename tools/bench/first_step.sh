#!/usr/bin/env bash
# A run's start-up, two tlab binaries side by side: run/first_step_seconds (from the run's
# process start to its first training step) of 5 runs with --spawn fork and with --spawn exec,
# each binary in turn, two rounds, on the same machine at the same time. For "per-run start-up
# unchanged or better" after a change to the front or the engine (docs/benchmarks.md).
# Usage: tools/bench/first_step.sh OLD_TLAB NEW_TLAB   (e.g. an older build's bin/tlab)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OLD_TLAB NEW_TLAB" >&2; exit 2; }
work=$(mktemp -d /tmp/tlab-first-step.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/exp.toml" <<'TOML'
name = "first_step"
seed = 1
device = "cpu"
[target]
plugin = "gaussians"
[backbone]
plugin = "mlp"
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 2
TOML
echo "| round | binary | spawn | run/first_step_seconds (5 runs): min-max, median |"
echo "|---|---|---|---|"
for round in 1 2; do
  for which in old new; do
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
