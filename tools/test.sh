#!/usr/bin/env bash
# The whole test suite: install, build, run every test with CTest. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
ctest --preset release
