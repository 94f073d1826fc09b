#!/usr/bin/env bash
# Are two results databases the same experiment's results, bit for bit? For refactors that must
# not change what the methods compute (e.g. the SDK 4 port: docs/benchmarks.md, "Plugin
# authoring"). Runs are matched by id (run the same sweeps in the same order, -j 1); timings,
# throughputs and whether a pre-training came from the cache (names with "seconds",
# "per_second", "_reused") are left out: a reused pre-training must give the same results.
# Prints the counts; exits 1 if anything differs.
# Usage: tools/bench/same_results.sh BEFORE.db AFTER.db
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BEFORE.db AFTER.db" >&2; exit 2; }
out=$(sqlite3 -separator ' ' :memory: "
attach '$1' as a; attach '$2' as b;
select 'runs', (select count(*) from a.runs where status = 'finished'),
               (select count(*) from b.runs where status = 'finished');
select 'metric rows', (select count(*) from a.metrics), (select count(*) from b.metrics);
select 'metric rows differing or missing', count(*) from a.metrics x
  left join b.metrics y on y.run_id = x.run_id and y.name = x.name and y.step = x.step
                       and y.epoch = x.epoch
  where y.run_id is null or x.value is not y.value;
select 'summaries differing or missing (timings, throughputs, cache hits left out)', count(*) from a.summaries x
  left join b.summaries y on y.run_id = x.run_id and y.name = x.name
  where x.name not like '%seconds%' and x.name not like '%per_second%'
    and x.name not like '%_reused' and (y.run_id is null or x.value is not y.value);
select 'parameter values differing or missing', count(*) from a.params x
  left join b.params y on y.run_id = x.run_id and y.key = x.key
  where y.run_id is null or x.value is not y.value;")
echo "$out"
echo "$out" | awk '/differing/ && $NF != 0 {bad=1} END {exit bad}'
