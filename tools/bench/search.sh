#!/usr/bin/env bash
# Hyperparameter search four ways on experiments/search_l2sp_digits.toml, the same space
# (learning rate x weight decay x L2-SP alpha): a 27-point grid, 20 random draws (DomainBed), 40
# random draws under ASHA (reduction 3, rungs at 3 and 9 of the 27 epochs), and 20 trials of
# Optuna's TPE (--sweeper optuna, 10 random startup trials, J trials at once); the sampled ones
# with three search seeds (SEEDS="0 1 2"). Then best validation
# accuracy against target-stage epochs spent, as a table and a plot (docs/benchmarks.md,
# "Hyperparameter search").
#   tools/bench/search.sh [BUILD_DIR] [OUT_DIR]     (J=2 runs at once by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
OUT=${2:-/tmp/tlab_search}
J=${J:-2}
mkdir -p "$OUT"
DB="$OUT/search.db"
rm -f "$DB" "$DB-wal" "$DB-shm" "$OUT/optuna.db"
TLAB=("$BUILD/bin/tlab" --plugin-path "$BUILD/plugins")
EXP=experiments/search_l2sp_digits.toml
# The grid's ranges (weight decay from 1e-6: a log interval cannot start at the grid's 0).
DIST=('train.lr=tag(log, interval(1e-4, 1e-2))'
      'train.weight_decay=tag(log, interval(1e-6, 1e-2))'
      'strategy.alpha=tag(log, interval(1e-3, 1e-1))')
timed() {  # label, command...
  local label=$1; shift
  local t0=$EPOCHREALTIME
  "$@" > "$OUT/$label.log" 2>&1
  echo "$label: $(echo "$EPOCHREALTIME - $t0" | bc) s wall" | tee -a "$OUT/times.txt"
}
: > "$OUT/times.txt"
timed grid "${TLAB[@]}" run "$EXP" -j "$J" --db "$DB" name=search_grid
# Random search and ASHA with SEEDS search seeds each (their draws differ by seed).
for seed in ${SEEDS:-0 1 2}; do
  timed "random_s$seed" "${TLAB[@]}" run "$EXP" -m '~sweep' +sweep.samples=20 \
    +sweep.search_seed="$seed" "${DIST[@]}" -j "$J" --db "$DB" name="search_random_s$seed"
  timed "asha_s$seed" "${TLAB[@]}" run "$EXP" -m '~sweep' +sweep.samples=40 \
    +sweep.search_seed="$seed" +sweep.asha.min_epochs=3 "${DIST[@]}" -j "$J" --db "$DB" \
    name="search_asha_s$seed"
  timed "tpe_s$seed" "${TLAB[@]}" run "$EXP" -m '~sweep' --sweeper optuna --trials 20 \
    +sweep.search_seed="$seed" "${DIST[@]}" -j "$J" --db "$DB" name="search_tpe_s$seed"
done
/usr/bin/python3 tools/bench/search_curves.py "$DB" "$OUT"
