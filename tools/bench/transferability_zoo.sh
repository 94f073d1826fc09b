#!/usr/bin/env bash
# Transferability benchmark (docs/benchmarks.md, "Transferability"): the shipped zoo
# experiments/transferability_zoo.toml (8 sources x 3 seeds, each run recording its starting
# point's LogME, LEEP, NCE and H-score before fine-tuning on 50 noisy target digits) and a scratch
# run per seed, then:
#   1. tlab results transferability: each score's Kendall tau / Pearson r over the runs;
#   2. per source (mean over seeds): each score and the realised accuracy, and each score's
#      Kendall tau over the 9 starting points (8 sources + scratch), computed here with
#      scipy.stats.kendalltau from `tlab results compare --format csv`;
#   3. the cost: scoring (transfer/seconds) against fine-tuning (target/train/seconds: the
#      training steps; target/stage_seconds: the target stage as run, with its per-epoch
#      validation and test evaluations), summed over the runs.
# Usage: tools/bench/transferability_zoo.sh [BUILD_DIR] [JOBS]   (defaults: build 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
jobs=${2:-2}
tlab="$PWD/$build/bin/tlab"
exp="$PWD/experiments/transferability_zoo.toml"
work=$(mktemp -d /tmp/tlab-bench-zoo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
start=$(date +%s)
"$tlab" run "$exp" -j "$jobs" >zoo.log 2>&1
"$tlab" run "$exp" strategy=scratch '~sweep' seed=1,2,3 -m -j "$jobs" >>zoo.log 2>&1
echo "zoo: 27 runs in $(($(date +%s) - start)) s ($jobs at once)"
# Whole commands, the pre-training cached by the zoo's runs for both: scoring every candidate
# (eval.transferability = "only": each run ends after scoring) against fine-tuning every one.
t0=$(date +%s.%N)
"$tlab" run "$exp" eval.transferability=only -j "$jobs" --db results/scored.db >only.log 2>&1
t1=$(date +%s.%N)
"$tlab" run "$exp" -j "$jobs" --db results/finetuned.db >again.log 2>&1
t2=$(date +%s.%N)
/usr/bin/python3 -c "import sys; a, b, c = map(float, sys.argv[1:]); \
print(f'24 candidates, pre-training cached: scoring them all {b - a:.1f} s, fine-tuning them all '\
      f'{c - b:.1f} s ({(c - b) / (b - a):.1f}x), tlab run -j $jobs wall time')" "$t0" "$t1" "$t2"
echo
"$tlab" results transferability
echo
"$tlab" results compare --by source.plugin,source.domain,source.label_noise,strategy.plugin \
  --metric target/test/acc,transfer/logme,transfer/leep,transfer/nce,transfer/hscore \
  --format csv 2>/dev/null >per_source.csv
/usr/bin/python3 - per_source.csv <<'PY'
import csv, sys
from scipy.stats import kendalltau
rows = list(csv.DictReader(open(sys.argv[1])))
def name(r):
    if r["strategy.plugin"] == "scratch":
        return "scratch (random init)"
    if r["source.plugin"] == "idx":
        return "fashion-mnist"
    return r["source.domain"] + (" shuffled labels" if r["source.label_noise"] not in ("", "0") else "")
def num(v):
    return float(v) if v not in ("", None) else float("nan")
for r in rows:  # the means over seeds
    for k in list(r):
        if k.endswith(" mean"):
            r[k[:-5]] = r[k]
scores = ["logme", "leep", "nce", "hscore"]
print("| starting point | test acc | " + " | ".join(scores) + " |")
print("|---|---|" + "---|" * len(scores))
rows.sort(key=lambda r: -num(r["target/test/acc"]))
for r in rows:
    print(f"| {name(r)} | {num(r['target/test/acc']):.3f} | " +
          " | ".join(f"{num(r['transfer/' + s]):.3f}" for s in scores) + " |")
print()
for s in scores:
    pts = [(num(r["transfer/" + s]), num(r["target/test/acc"])) for r in rows
           if r["transfer/" + s] != ""]
    t = kendalltau([p[0] for p in pts], [p[1] for p in pts])
    print(f"{s}: Kendall tau over {len(pts)} starting points {t.correlation:.3f} (p {t.pvalue:.3g})")
PY
echo
/usr/bin/python3 - "$work/results/results.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
total = dict(db.execute("SELECT name, SUM(value) FROM summaries WHERE name IN ('transfer/seconds', "
                        "'target/train/seconds', 'target/stage_seconds') GROUP BY name"))
n = db.execute("SELECT COUNT(*) FROM summaries WHERE name = 'transfer/seconds'").fetchone()[0]
score = total["transfer/seconds"]
print(f"cost over {n} runs: scoring {score:.2f} s ({score / n:.4f} s per run); fine-tuning steps "
      f"{total['target/train/seconds']:.2f} s ({total['target/train/seconds'] / score:.0f}x); "
      f"target stage as run {total['target/stage_seconds']:.2f} s "
      f"({total['target/stage_seconds'] / score:.0f}x)")
PY
