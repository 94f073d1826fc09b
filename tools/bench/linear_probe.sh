#!/usr/bin/env bash
# Linear probe benchmark: the head trained on cached features (linear_probe) against the same
# probe recomputing the features every epoch (finetune freeze_backbone = true), on the cnn
# backbone with 10000 labelled noisy target digits; then linear_probe with cache = "disk" twice
# (the second run loads the features). Prints one markdown row per run: target test accuracy,
# the target stage's training loop (seconds, samples/s; evaluation excluded), the feature pass
# and the whole run's wall time.
# Usage: tools/bench/linear_probe.sh [BUILD_DIR] [TARGET_TRAIN] [EPOCHS] [DEVICE] [SEEDS]
#        (defaults: build 10000 10 cpu 1; SEEDS a comma list, e.g. 1,2,3: one row per seed)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
n=${2:-10000}
epochs=${3:-10}
device=${4:-cpu}
seeds=${5:-1}
tlab="$PWD/$build/bin/tlab"
work=$(mktemp -d /tmp/tlab-bench-probe.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat >"$work/probe.toml" <<EOT
defaults = [
  { "dataset@source" = "digits_clean" },
  { "dataset@target" = "digits_noisy" },
  { backbone = "cnn" },
  { "adapter@adapters.0" = "linear_head" },
  { strategy = "finetune" },
  { train = "adam" },
  "_self_",
]
name = "bench_linear_probe"
seed = 1
device = "$device"

[source]
train_size = 2000
val_size = 200

[target]
seed = 1
train_size = $n
val_size = 500
test_size = 1000

[strategy]
source_epochs = 2

[train]
epochs = $epochs
batch_size = 64
EOT
db="$work/results.db"
run() {  # $1 = label, then overrides
  local label=$1
  shift
  local before
  before=$("$tlab" results list --format json --db "$db" 2>/dev/null |
    /usr/bin/python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  "$tlab" run "$work/probe.toml" --config-dir experiments --db "$db" --rerun -m "seed=$seeds" \
    "$@" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
  "$tlab" results list --format json --db "$db" | /usr/bin/python3 -c '
import json, sys
for run in json.load(sys.stdin)[int(sys.argv[2]):]:
    r = run["summary"]
    g = lambda k: r.get(k, float("nan"))
    print("| %s | %s | %.4f | %.2f | %.0f | %.2f | %.0f | %.2f |" % (sys.argv[1],
          run["params"]["seed"], g("target/test/acc"), g("target/train/seconds"),
          g("target/train/samples_per_second"), g("target/probe/feature_seconds"),
          g("target/probe/feature_passes"), g("run/wall_seconds")))' "$label" "$before"
}
echo "| strategy | seed | target test acc | target train loop s | samples/s | feature pass s | feature passes | run wall s |"
echo "|---|---|---|---|---|---|---|---|"
run "finetune freeze_backbone=true (features every epoch)" strategy.freeze_backbone=true
run "linear_probe cache=memory" strategy=linear_probe
run "linear_probe cache=disk (first: computes)" strategy=linear_probe +strategy.cache=disk
run "linear_probe cache=disk (second: loads)" strategy=linear_probe +strategy.cache=disk
