#!/usr/bin/env bash
# Fuzzes the config code with libFuzzer, ASan and UBSan: builds fuzz_override and fuzz_compose
# (tests/fuzz) with clang in build-fuzz/ and runs each for SECONDS (default 60) on a copy of its
# seed corpus. New inputs, logs and crash reproducers stay in build-fuzz/fuzz/<target>/; the
# source tree is never written. Exits 1 when a target crashes, leaks, hangs or runs out of
# memory (printing the reproducer), 77 (skipped) when clang or libFuzzer is missing (Debian:
# clang, libclang-rt-14-dev), 0 otherwise.
#
#   tools/fuzz.sh [SECONDS]
#   build-fuzz/bin/fuzz_compose REPRODUCER        # replays one input with the sanitizers
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-60}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: tools/fuzz.sh [SECONDS]   (SECONDS per target, default 60)" >&2
  exit 2
fi
targets=(override compose)
build=$root/build-fuzz

# clang with libFuzzer, or skip.
cxx="" cc=""
for v in "" -14; do
  if command -v "clang++$v" >/dev/null && command -v "clang$v" >/dev/null; then
    cxx=$(command -v "clang++$v") cc=$(command -v "clang$v")
    break
  fi
done
if [ -z "$cxx" ]; then
  echo "[fuzz] clang not installed: skipped (apt-get install clang libclang-rt-14-dev)"
  exit 77
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"$probe/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" \
  >"$probe/log" 2>&1; then
  echo "[fuzz] $cxx cannot link libFuzzer: skipped (apt-get install libclang-rt-14-dev)"
  sed 's/^/  /' "$probe/log" | head -5
  exit 77
fi

mkdir -p "$build"
# One fuzz run at a time in build-fuzz (a manual run and the ctest fuzz_smoke test).
exec 9>"$build/.fuzz.lock"
flock 9

echo "[fuzz] building ${targets[*]/#/fuzz_} in build-fuzz/ with $cxx"
if ! cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" -DTLAB_FUZZ=ON -DTLAB_BUILD_TESTS=ON \
  >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  echo "[fuzz] configure failed (log: build-fuzz/configure.log)" >&2
  exit 1
fi
ninja -C "$build" "${targets[@]/#/fuzz_}"

failed=0
for t in "${targets[@]}"; do
  work=$build/fuzz/$t
  mkdir -p "$work/corpus"
  rm -rf "$work/artifacts" && mkdir -p "$work/artifacts"
  # New inputs found in earlier runs stay; the seeds are copied in again.
  cp -r "$root/tests/fuzz/corpus/$t/." "$work/corpus/"
  # -max_len: longer seeds (regression inputs) are cut there, keeping each run fast.
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1
    -error_exitcode=1 -timeout_exitcode=1 -artifact_prefix="$work/artifacts/")
  [ -f "$root/tests/fuzz/$t.dict" ] && args+=(-dict="$root/tests/fuzz/$t.dict")
  echo "[fuzz] fuzz_$t for ${seconds}s (log: build-fuzz/fuzz/$t/fuzz.log)"
  rc=0
  # Run where there is no ./experiments folder (composition would search it).
  (cd "$work" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$build/bin/fuzz_$t" "${args[@]}" corpus) >"$work/fuzz.log" 2>&1 || rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$work/fuzz.log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -1)
  echo "[fuzz] fuzz_$t: ${done_line:-no DONE line} (${execs:-?} inputs run)"
  mapfile -t found < <(find "$work/artifacts" -type f ! -name 'slow-unit-*' | sort)
  if [ "$rc" -ne 0 ] || [ ${#found[@]} -gt 0 ]; then
    failed=1
    echo "[fuzz] fuzz_$t FAILED (exit $rc); the end of its log:" >&2
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$work/fuzz.log" | tail -40 \
      | sed 's/^/  /' >&2
    for f in "${found[@]}"; do
      echo "[fuzz] reproducer: $f" >&2
      echo "[fuzz]   replay: build-fuzz/bin/fuzz_$t $f" >&2
    done
  fi
done
exit "$failed"
