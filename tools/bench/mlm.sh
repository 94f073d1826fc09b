#!/usr/bin/env bash
# Masked-language-model training speed: tlab's MLM stage (finetune pretrain = "mlm", the tiny
# BERT of experiments/reviews_bert_mlm.toml on the generated reviews' 3,200 texts: 1,600 books, 1,600 kitchen)
# against the same training in plain PyTorch (tools/bench/perf/pytorch_mlm.py), with 1 and 2
# threads. tlab's number is the stage's mlm/train/samples_per_second (its training loop: steps,
# masking, optimiser; not the held-out evaluation).
#   tools/bench/mlm.sh [BUILD_DIR] [EPOCHS]
set -euo pipefail
build=${1:-build}
epochs=${2:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$root"
[ -f results/datasets/reviews/vocab.txt ] || /usr/bin/python3 tools/reviews.py >/dev/null
for threads in 1 2; do  # a results folder each: the second would reuse the first MLM
  mkdir -p "$out/t$threads"
  "$build/bin/tlab" run experiments/reviews_bert_mlm.toml strategy.pretrain=mlm seed=1 \
    strategy.mlm_epochs="$epochs" train.epochs=0 --threads "$threads" --db "$out/t$threads/r.db" \
    >/dev/null 2>&1
  sps=$(sqlite3 "$out/t$threads/r.db" \
    "select round(value) from summaries where name = 'mlm/train/samples_per_second'")
  echo "tlab mlm threads=$threads samples/s $sps"
  /usr/bin/python3 tools/bench/perf/pytorch_mlm.py "$threads" 3200 "$epochs"
done
