#!/usr/bin/env bash
# Plugin authoring, lines (docs/benchmarks.md, "Plugin authoring"): the lines of in-tree strategies
# now and at a given commit (default: the last commit before SDK 4), and of the out-of-tree
# examples of docs/writing-plugins.md. Counts non-blank lines, comments included; the shared
# headers a plugin compiles in (plugins/strategies/common/) are counted apart.
# Usage: tools/bench/plugin_lines.sh [BEFORE_COMMIT]
set -euo pipefail
cd "$(dirname "$0")/../.."
before=${1:-add8d9c}
count() { grep -cv '^[[:space:]]*$' || true; }
printf '| file | before (%s) | after |\n| --- | ---: | ---: |\n' "$before"
for f in plugins/strategies/{scratch/scratch,l2sp/l2sp,source_only/source_only,dan/dan,coral/coral,dann/dann}.cpp \
         plugins/strategies/common/{adapt,feature_da,finetuning}.hpp \
         framework/include/tlab/sdk/{source,sampler,mode,adaptation,check,torch}.hpp; do
  b=$(git show "$before:$f" 2>/dev/null | count); [ -n "$b" ] || b=-
  a=-; [ -f "$f" ] && a=$(count < "$f")
  [ "$b" = 0 ] && b=-
  printf '| %s | %s | %s |\n' "$f" "$b" "$a"
done
# The examples of the guide: each ```cpp block with TLAB_PLUGIN(, named by its plugin.
awk '/^```cpp/{on=1; buf=""; next} /^```/{ if (on && buf ~ /TLAB_PLUGIN\(/) { match(buf, /TLAB_PLUGIN\([A-Za-z_0-9]+, "[a-z_0-9]+"/); name=substr(buf, RSTART, RLENGTH); sub(/.*"/, "", name); sub(/"$/, "", name); n=split(buf, L, "\n"); c=0; for (i=1;i<=n;i++) if (L[i] ~ /[^[:space:]]/) c++; printf "| docs/writing-plugins.md: %s | | %d |\n", name, c } on=0; next } on {buf = buf $0 "\n"}' docs/writing-plugins.md
