#!/usr/bin/env bash
# Plugin authoring, time (docs/benchmarks.md, "Plugin authoring"): from `tlab new plugin` to a
# finished sweep of the new plugin, with tlab already built (warm): scaffold, put in the entmin
# strategy of docs/writing-plugins.md (what an author types), an experiment using it, configure
# and build the plugin out of tree with find_package(tlab), run a 2-seed sweep. Prints the time
# of each step and the total.
# Usage: tools/bench/authoring.sh [WORK_DIR]   (default: a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$PWD
T=$top/build/bin/tlab
W=${1:-$(mktemp -d /tmp/tlab-authoring.XXXXXX)}
mkdir -p "$W"
cd "$W"
now() { date +%s.%N; }
lap() { printf '%-34s %6.1f s\n' "$1" "$(echo "$(now) - $2" | bc)"; }
t0=$(now)
t=$(now); "$T" new plugin strategy entmin >/dev/null; lap "tlab new plugin strategy entmin" "$t"
# The guide's entmin, as the author would type it into entmin/entmin.cpp.
awk '/^```cpp/{on=1; buf=""; next} /^```/{ if (on && buf ~ /TLAB_PLUGIN\(Entmin,/) printf "%s", buf; on=0; next } on {buf = buf $0 "\n"}' \
  "$top/docs/writing-plugins.md" > entmin/entmin.cpp
[ -s entmin/entmin.cpp ] || { echo "no entmin block in docs/writing-plugins.md" >&2; exit 1; }
cat > entmin/sweep.toml <<TOML
# entmin on the moons shift: pre-train on the source, then 10 labels per target class plus the
# target's unlabelled pool.
defaults = [
  { "dataset@source" = "moons_source" }, { "dataset@target" = "moons_target" },
  { backbone = "mlp" }, { "adapter@adapters.0" = "linear_head" }, "_self_",
]
name = "entmin_sweep"
device = "cpu"
[target]
shots = 10
[strategy]
plugin = "entmin"
source_epochs = 5
weight = 0.1
[train]
epochs = 20
[sweep]
seed = [1, 2]
TOML
t=$(now)
cmake -S entmin -B entmin/build -G Ninja -DCMAKE_BUILD_TYPE=Release -Dtlab_DIR="$top/build" >/dev/null
lap "cmake configure" "$t"
t=$(now); cmake --build entmin/build --target tlab_plugin_strategy_entmin >/dev/null
lap "build entmin.so" "$t"
t=$(now)
"$T" --plugin-path entmin/build/plugins run entmin/sweep.toml --config-dir "$top/experiments" \
  --db results.db -j 2 2>&1 | tail -1
lap "tlab run (2 runs, -j 2)" "$t"
lap "total" "$t0"
"$T" results compare --db results.db --by strategy.plugin 2>/dev/null | head -5 || true
