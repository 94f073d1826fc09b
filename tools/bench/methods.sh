#!/usr/bin/env bash
# The transfer-methods benchmark (docs/benchmarks.md, "Transfer methods"): every strategy on the
# digits shifts (clean -> rotated, clean -> noisy) and the moons shift, 3 seeds, with the
# project's own `tlab run -m`; then the tables with `tlab results compare`.
# Usage: tools/bench/methods.sh [DB]     (default results/methods.db; runs already finished in
#                                         it are skipped, so an interrupted benchmark resumes)
# Takes about 10 minutes on 2 cores (-j 2, one thread per run).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=build/bin/tlab
DB=${1:-results/methods.db}
$T run experiments/methods_digits_uda.toml --db $DB -j 2
$T run experiments/methods_digits_fewshot.toml --db $DB -j 2
for d in rotated noisy; do
  teacher=$(sqlite3 $DB "select r.id from runs r join params a on a.run_id=r.id and a.key='strategy.plugin' and a.value='finetune' join params b on b.run_id=r.id and b.key='target.domain' and b.value='$d' where r.name='methods_digits_fewshot' and r.status='finished' and r.seed=1 order by r.id limit 1")
  [ -n "$teacher" ]
  echo "teacher for $d: run $teacher"
  $T run experiments/methods_digits_fewshot.toml --db $DB -j 2 -m "dataset@target=digits_$d" strategy=distill,rkd ++strategy.teacher=run:$teacher seed=1,2,3
done
$T run experiments/methods_moons.toml --db $DB -j 2
teacher=$(sqlite3 $DB "select r.id from runs r join params a on a.run_id=r.id and a.key='strategy.plugin' and a.value='finetune' where r.name='methods_moons' and r.status='finished' and r.seed=1 order by r.id limit 1")
[ -n "$teacher" ]
echo "teacher for moons: run $teacher"
$T run experiments/methods_moons.toml --db $DB -j 2 -m strategy=distill,rkd ++strategy.teacher=run:$teacher seed=1,2,3
$T run experiments/methods_moons.toml --db $DB -j 2 -m train.epochs=0 strategy=source_only,dan,coral,dann,importance_weighting ++strategy.source_epochs=30 seed=1,2,3
$T run experiments/methods_moons.toml --db $DB -j 2 -m train.epochs=0 strategy=pseudo_label ++strategy.epochs=30 seed=1,2,3
echo
echo "== Unsupervised domain adaptation on digits (no target labels)"
$T results compare --db $DB --where "name = 'methods_digits_uda'" --by strategy.plugin --pivot target.domain --format markdown
echo
echo "== 10 labelled target examples per class on digits"
$T results compare --db $DB --where "name = 'methods_digits_fewshot'" \
  --by strategy.plugin strategy.lr_decay strategy.unfreeze_every --pivot target.domain --format markdown
echo
echo "== Moons (train.epochs 0: unsupervised domain adaptation; 100: 10 labels per class)"
$T results compare --db $DB --where "name = 'methods_moons'" \
  --by strategy.plugin strategy.lr_decay strategy.unfreeze_every train.epochs --format markdown

