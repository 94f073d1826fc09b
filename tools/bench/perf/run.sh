#!/usr/bin/env bash
# Performance on CPU (issue 7): the same training work three ways, run alternating, with medians
# and ratios.
#   bare    - build/bin/bench_bare_loop (tools/bench/perf/bare_loop.cpp): LibTorch alone;
#   tlab    - `tlab run` on an equivalent experiment (strategy scratch, backbone + linear_head);
#   pytorch - /usr/bin/python3 tools/bench/perf/pytorch_loop.py: plain PyTorch (Debian's
#             python3-torch, the same LibTorch underneath).
# Workloads (10 classes, Adam lr 1e-3, shuffled every epoch, test set 256, no validation):
#   mlp      - mlp [512, 256] on 784-dimensional inputs (tlab: gaussians dim 784), batch 128,
#              20000 examples x 5 epochs;
#   cnn      - the small CNN (channels 16, 32, batch norm, 64 features) on 1x28x28 images
#              (tlab: digits), batch 64, 10000 examples x 3 epochs;
#   resnet18 - torchvision's ResNet-18 on 3x32x32 images (tlab: cifar, from a CIFAR-10 binary
#              file of random bytes this script writes), batch 32, 1024 examples x 2 epochs.
# bare and pytorch train on random tensors of the same shapes: the content does not change the
# speed. Reported per implementation and workload (medians over the repetitions):
#   samples/s  - train examples x epochs / seconds in the training loops (tlab: the summaries
#                target/train/seconds and target/train/samples_per_second; the same span in the
#                other two: from the first step to the epoch's loss read; no data generation, no
#                evaluation);
#   wall       - the whole process, start to exit (tlab: the parent and its run process);
#   peak RSS   - ru_maxrss of the command from wait4 (for tlab the larger of the parent's and the
#                run process's); tree RSS: the summed RSS of its processes, sampled every 50 ms.
#
# Usage: tools/bench/perf/run.sh [--reps N] [--quick] [--threads N] [--build DIR]
#                                [--workloads mlp,cnn,resnet18] [--tuned-malloc] [--lock FILE]
#                                [--out FILE] [--keep]
#   --reps N      repetitions (default 3); each repetition runs every workload with the three
#                 implementations in a rotating order (bare, tlab, pytorch; then tlab, pytorch,
#                 bare; ...)
#   --quick       1 repetition of small sizes (a smoke test, ~1 minute; the numbers mean little)
#   --threads N   intra-op threads for all three (default 2); OMP_NUM_THREADS=N and
#                 OPENBLAS_NUM_THREADS=1 for all three (tlab and bench_bare_loop also set OpenBLAS
#                 to one thread themselves)
#   --tuned-malloc  run all three with GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:
#                 glibc.malloc.trim_threshold=67108864 (glibc keeps freed activations instead of
#                 unmapping and page-faulting them again every step; see docs/benchmarks-perf.md)
#   --lock FILE   run each measured command under `flock FILE` (e.g. /tmp/tlab-build.lock, so
#                 that no build runs while one measures); the wait is not measured
#   --out FILE    also write the markdown report to FILE
#   --keep        keep the temporary folder (data, experiments, logs, raw results.jsonl)
# Builds nothing: needs build/bin/tlab, its plugins and build/bin/bench_bare_loop, and python3
# with torch and torchvision (python3-torch, python3-torchvision).
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$PWD

reps=3
quick=0
threads=2
build=build
workloads=mlp,cnn,resnet18
tuned_malloc=0
lock=
out=
keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --tuned-malloc) tuned_malloc=1; shift ;;
    --lock) lock=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ "$quick" = 1 ] && [ "$reps" = 3 ] && reps=1
case $reps in ''|*[!0-9]*|0) echo "run.sh: --reps needs a positive integer" >&2; exit 2 ;; esac
case $threads in ''|*[!0-9]*|0) echo "run.sh: --threads needs a positive integer" >&2; exit 2 ;; esac

case $build in /*) ;; *) build=$root/$build ;; esac
tlab=$build/bin/tlab
bare=$build/bin/bench_bare_loop
py=/usr/bin/python3
missing=
for f in "$tlab" "$bare"; do [ -x "$f" ] || missing="$missing $f"; done
for p in datasets/gaussians datasets/digits datasets/cifar backbones/mlp backbones/cnn \
         backbones/resnet adapters/linear_head strategies/scratch; do
  [ -f "$build/plugins/$p.so" ] || missing="$missing $build/plugins/$p.so"
done
if [ -n "$missing" ]; then
  echo "run.sh: not built:$missing" >&2
  echo "build first: flock /tmp/tlab-build.lock ninja -C $build   (or: ninja -C $build tlab bench_bare_loop and the plugins)" >&2
  exit 1
fi
"$py" -c 'import torch, torchvision' 2> /dev/null ||
  { echo "run.sh: $py cannot import torch and torchvision (apt install python3-torch python3-torchvision)" >&2; exit 1; }
command -v sqlite3 > /dev/null || { echo "run.sh: needs sqlite3" >&2; exit 1; }
[ -z "$lock" ] || command -v flock > /dev/null || { echo "run.sh: --lock needs flock" >&2; exit 1; }

# Sizes per workload: batch, train examples, epochs.
declare -A batch=([mlp]=128 [cnn]=64 [resnet18]=32)
declare -A train=([mlp]=20000 [cnn]=10000 [resnet18]=1024)
declare -A epochs=([mlp]=5 [cnn]=3 [resnet18]=2)
if [ "$quick" = 1 ]; then
  train=([mlp]=4000 [cnn]=2000 [resnet18]=128)
  epochs=([mlp]=2 [cnn]=2 [resnet18]=2)
fi
test_size=256
IFS=, read -r -a wl <<< "$workloads"
for w in "${wl[@]}"; do
  [ -n "${batch[$w]:-}" ] || { echo "run.sh: unknown workload '$w' (mlp, cnn, resnet18)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/tlab-bench-perf.XXXXXX)
if [ "$keep" = 1 ]; then trap 'echo "kept: $work" >&2' EXIT; else trap 'rm -rf "$work"' EXIT; fi
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1
malloc_note="glibc malloc defaults"
if [ "$tuned_malloc" = 1 ]; then
  export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864
  malloc_note="GLIBC_TUNABLES=$GLIBC_TUNABLES"
fi

# CIFAR-10 binary files of random pixels: 1 label byte + 3072 pixel bytes per record.
"$py" - "$work" "${train[resnet18]}" "$test_size" <<'PY'
import os, random, sys
work, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(0)
for name, count in (("data_batch_1.bin", n), ("test_batch.bin", t)):
    with open(os.path.join(work, name), "wb") as f:
        for _ in range(count):
            f.write(bytes([rng.randrange(10)]) + rng.randbytes(3072))
PY

experiment() {  # $1 = workload
  local target backbone
  case $1 in
    mlp)
      target="plugin = \"gaussians\"
dim = 784
num_classes = 10
train_size = ${train[mlp]}
val_size = 0
test_size = $test_size"
      backbone="plugin = \"mlp\"
hidden = [512, 256]" ;;
    cnn)
      target="plugin = \"digits\"
train_size = ${train[cnn]}
val_size = 0
test_size = $test_size"
      backbone="plugin = \"cnn\"
channels = [16, 32]
feature_dim = 64
batch_norm = true" ;;
    resnet18)
      target="plugin = \"cifar\"
dir = \"$work\"
train_files = [\"data_batch_1.bin\"]
test_file = \"test_batch.bin\"
val_fraction = 0.0"
      backbone="plugin = \"resnet\"
depth = 18" ;;
  esac
  cat <<EOF
name = "perf-$1"
seed = 1
device = "cpu"
[target]
$target
[backbone]
$backbone
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = ${epochs[$1]}
batch_size = ${batch[$1]}
optimizer = "adam"
lr = 1e-3
EOF
}

# measure.py OUT LOG CMD...: runs CMD (output to LOG), writes one JSON object to OUT: wall
# seconds, peak RSS (ru_maxrss from wait4, KiB: the largest single process), the peak of the
# summed RSS of CMD's process tree (sampled every 50 ms: tlab's parent and run process together),
# minor page faults, user and sys CPU seconds, and the share of the machine's CPU time that other
# processes used meanwhile (from /proc/stat; a noise indicator).
cat > "$work/measure.py" <<'PY'
import json, os, subprocess, sys, threading, time
def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], v[7]  # busy jiffies (idle and iowait excluded), steal
def tree_rss(pid):  # KiB, this process and its descendants
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return total
out, log, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
b0, s0 = busy()
t0 = time.perf_counter()
peak_tree, done = [0], threading.Event()
with open(log, "wb") as f:
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    def sample():
        while not done.wait(0.05):
            peak_tree[0] = max(peak_tree[0], tree_rss(p.pid))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, ru = os.wait4(p.pid, 0)
    done.set()
    p.returncode = os.waitstatus_to_exitcode(status)
wall = time.perf_counter() - t0
sampler.join()
b1, s1 = busy()
hz = os.sysconf("SC_CLK_TCK")
own = ru.ru_utime + ru.ru_stime
other = max(0.0, (b1 - b0) / hz - own) / (wall * os.cpu_count())
with open(out, "w") as f:
    json.dump({"rc": p.returncode, "wall_seconds": wall, "peak_rss_kb": ru.ru_maxrss,
               "tree_rss_kb": max(peak_tree[0], ru.ru_maxrss), "minor_faults": ru.ru_minflt,
               "user_seconds": ru.ru_utime, "sys_seconds": ru.ru_stime,
               "other_load": other, "steal_seconds": (s1 - s0) / hz}, f)
PY

measure() {  # $1 = name; the rest = command
  local name=$1
  shift
  if [ -n "$lock" ]; then
    flock "$lock" "$py" "$work/measure.py" "$work/$name.m.json" "$work/$name.log" "$@"
  else
    "$py" "$work/measure.py" "$work/$name.m.json" "$work/$name.log" "$@"
  fi
}

summary() {  # $1 = db, $2 = name: of the latest run, if it finished
  sqlite3 "$1" "SELECT s.value FROM summaries s JOIN runs r ON r.id = s.run_id WHERE s.name = '$2'
    AND r.status = 'finished' AND r.id = (SELECT max(id) FROM runs)"
}

run_one() {  # $1 = impl, $2 = workload, $3 = rep; appends one JSON line to results.jsonl
  local impl=$1 w=$2 rep=$3 name="$1-$2-$3" args
  args=(--workload "$w" --threads "$threads" --epochs "${epochs[$w]}" --train "${train[$w]}"
        --test "$test_size" --batch "${batch[$w]}" --lr 1e-3)
  case $impl in
    bare) measure "$name" "$bare" "${args[@]}" ;;
    pytorch) measure "$name" "$py" "$root/tools/bench/perf/pytorch_loop.py" "${args[@]}" ;;
    tlab)
      measure "$name" "$tlab" run "$work/$w.toml" --db "$work/tlab-$w.db" --threads "$threads" --rerun
      local secs sps params
      secs=$(summary "$work/tlab-$w.db" target/train/seconds)
      sps=$(summary "$work/tlab-$w.db" target/train/samples_per_second)
      params=$(summary "$work/tlab-$w.db" model/params/total)
      params=${params%.0}
      printf '{"impl": "tlab", "workload": "%s", "train_seconds": %s, "samples_per_second": %s, "parameters": %s}\n' \
        "$w" "${secs:-null}" "${sps:-null}" "${params:-null}" >> "$work/$name.log" ;;
  esac
  "$py" - "$work/$name.m.json" "$work/$name.log" "$impl" "$w" "$rep" >> "$work/results.jsonl" <<'PY'
import json, sys
m, log, impl, w, rep = sys.argv[1:]
r = {"impl": impl, "workload": w, "rep": int(rep)}
r.update(json.load(open(m)))
lines = [l for l in open(log, errors="replace").read().splitlines() if l.startswith("{")]
if r["rc"] == 0 and lines:
    r.update({k: v for k, v in json.loads(lines[-1]).items() if k not in ("impl", "workload")})
else:
    r["error"] = open(log, errors="replace").read()[-2000:]
print(json.dumps(r))
PY
  local err
  err=$("$py" -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print("" if r.get("samples_per_second") else "failed (rc %s)" % r["rc"])' "$work/results.jsonl")
  if [ -n "$err" ]; then
    echo "run.sh: $impl $w rep $rep $err; its output:" >&2
    tail -n 20 "$work/$name.log" >&2
    exit 1
  fi
}

for w in "${wl[@]}"; do experiment "$w" > "$work/$w.toml"; done
impls=(bare tlab pytorch)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_all=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  for w in "${wl[@]}"; do
    for ((k = 0; k < 3; k++)); do
      impl=${impls[$(((rep - 1 + k) % 3))]}
      echo "rep $rep/$reps  $w  $impl" >&2
      run_one "$impl" "$w" "$rep"
    done
  done
done
elapsed=$(($(date +%s) - t_all))

# The report: machine, versions, the command; medians per implementation; ratios and goals.
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
mem=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
libtorch=$(dpkg-query -W -f '${Version}' libtorch-dev 2> /dev/null || echo unknown)
pytorch=$("$py" -c 'import torch, torchvision; print(torch.__version__, "/ torchvision", torchvision.__version__)')
blas=$(dpkg-query -W -f '${Package} ${Version}' libopenblas0-pthread 2> /dev/null || echo unknown)
cmdline="tools/bench/perf/run.sh --reps $reps --threads $threads"
[ "$quick" = 0 ] || cmdline="$cmdline --quick"
[ "$workloads" = mlp,cnn,resnet18 ] || cmdline="$cmdline --workloads $workloads"
[ "$tuned_malloc" = 0 ] || cmdline="$cmdline --tuned-malloc"
"$py" - "$work/results.jsonl" "$(nproc)" "$cpu" "$mem" "$started" "$libtorch" "$pytorch" "$blas" \
  "$threads" "$cmdline" "$elapsed" "$(uname -r)" "$malloc_note" <<'PY' | tee "$work/report.md"
import json, statistics, sys
path, nproc, cpu, mem, started, libtorch, pytorch, blas, threads, cmd, elapsed, kernel, malloc = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
impls = ["bare", "tlab", "pytorch"]
workloads = list(dict.fromkeys(r["workload"] for r in rows))
reps = max(r["rep"] for r in rows)
size = {r["workload"]: (r.get("train"), r.get("epochs"), r.get("batch")) for r in rows if r["impl"] == "bare"}

def vals(w, i, key):
    return [r[key] for r in rows if r["workload"] == w and r["impl"] == i and r.get(key) is not None]

def med(w, i, key):
    v = vals(w, i, key)
    return statistics.median(v) if v else float("nan")

print(f"- Machine: {nproc} cores ({cpu}), {mem}, Linux {kernel}")
print(f"- Date: {started}; the whole harness took {int(elapsed) // 60} min {int(elapsed) % 60} s")
print(f"- LibTorch {libtorch} (Debian, CPU); PyTorch {pytorch} (python3-torch); {blas}")
print(f"- Threads: {threads} intra-op for all three (OMP_NUM_THREADS={threads}, OPENBLAS_NUM_THREADS=1); {malloc}")
print(f"- Command: `{cmd}`; {reps} repetition(s), medians (min-max over the repetitions)")
for w in workloads:
    counts = {i: sorted({int(v) for v in vals(w, i, "parameters")}) for i in impls}
    same = len({tuple(c) for c in counts.values()}) == 1
    print(f"- {w}: " + (f"{counts['bare'][0]:,} parameters in all three models" if same else
          "**parameter counts differ**: " + ", ".join(f"{i} {c}" for i, c in counts.items())))
print()
print("| workload | impl | samples/s | train loop s | process wall s | peak RSS MB | tree RSS MB "
      "| minor faults | CPU user+sys s | other load |")
print("|---|---|---|---|---|---|---|---|---|---|")
for w in workloads:
    n, e, b = size.get(w, (None, None, None))
    label = f"{w} ({n} x {e} ep, batch {b})" if n else w
    for i in impls:
        sps = vals(w, i, "samples_per_second")
        if not sps:
            continue
        cpu_s = [r["user_seconds"] + r["sys_seconds"] for r in rows if r["workload"] == w and r["impl"] == i]
        print(f"| {label} | {i} | {statistics.median(sps):,.0f} ({min(sps):,.0f}-{max(sps):,.0f}) "
              f"| {med(w, i, 'train_seconds'):.2f} | {med(w, i, 'wall_seconds'):.2f} "
              f"| {med(w, i, 'peak_rss_kb') / 1024:.0f} | {med(w, i, 'tree_rss_kb') / 1024:.0f} "
              f"| {med(w, i, 'minor_faults') / 1000:,.0f} k | {statistics.median(cpu_s):.1f} "
              f"| {100 * max(vals(w, i, 'other_load')):.0f}% |")
        label = ""
print()
print("| workload | tlab/bare samples/s (goal >= 0.97) | tlab/pytorch samples/s (goal >= 1.0) "
      "| tlab/bare peak RSS (goal <= 1.1) | tlab/bare tree RSS | tlab/bare process wall |")
print("|---|---|---|---|---|---|")
def mark(x, ok):
    return f"{x:.3f} {'met' if ok else '**missed**'}"
def best(w, i):
    v = vals(w, i, "samples_per_second")
    return max(v) if v else float("nan")
for w in workloads:
    r = lambda key, i="tlab", j="bare": med(w, i, key) / med(w, j, key)
    tb, tp = r("samples_per_second"), r("samples_per_second", "tlab", "pytorch")
    mb = r("peak_rss_kb")
    print(f"| {w} | {mark(tb, tb >= 0.97)} (best {best(w, 'tlab') / best(w, 'bare'):.3f}) "
          f"| {mark(tp, tp >= 1.0)} (best {best(w, 'tlab') / best(w, 'pytorch'):.3f}) "
          f"| {mark(mb, mb <= 1.1)} | {r('tree_rss_kb'):.3f} | {r('wall_seconds'):.2f} |")
print()
print("samples/s = train examples x epochs / seconds in the training loops (tlab: "
      "target/train/seconds), median (min-max); best = the ratio of the fastest repetitions. "
      "peak RSS = ru_maxrss (largest single process); tree RSS = the summed RSS of the command's "
      "processes, sampled every 50 ms (tlab: its parent and the run process; shared library pages "
      "count once per process). other load = the "
      "largest share of the machine's CPU time that other processes used during one of the runs "
      "(noise; > 10% makes that run suspect).")
PY
[ -z "$out" ] || cp "$work/report.md" "$out"
