#!/usr/bin/env bash
# The main job: install, build, and run experiments/quickstart.toml (scratch vs fine-tuning on
# rendered digits). Results go to results/results.db; a table is printed at the end.
# Extra arguments go to `tlab run` (e.g. train.epochs=5).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
exec build/bin/tlab run experiments/quickstart.toml "$@"
