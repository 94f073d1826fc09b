#!/usr/bin/env bash
# Fails if a C/C++ source differs from .clang-format's style. Exit 77 (skipped) without
# clang-format. Fix with: clang-format -i $(git ls-files '*.cpp' '*.hpp' '*.c' '*.h')
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format not installed: skipped"; exit 77; }
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.c' '*.h' 2>/dev/null || find framework plugins tests -name '*.[ch]pp' -o -name '*.[ch]')
clang-format --dry-run --Werror "${files[@]}"
echo "${#files[@]} files formatted"
