#!/usr/bin/env bash
# Installs what TransferLab needs from Debian 12's apt, only what is missing. Idempotent.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config git binutils
  libtorch-dev libopenblas0-pthread            # LibTorch 1.13 (CPU) and an optimised BLAS
  libgloo-dev                                  # Gloo: one run on several processes (c10d)
  libutf8proc-dev                              # Unicode for the SDK's WordPiece tokenizer
  libsentencepiece-dev python3-sentencepiece   # SentencePiece models (text dataset; tests)
  python3-regex                                # GPT-2/RoBERTa BPE pre-tokenizer: test reference
  libtomlplusplus-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libsqlite3-dev sqlite3 libboost-dev libxxhash-dev
  libgtest-dev libgmock-dev
  clang libclang-rt-14-dev                     # libFuzzer, ASan, UBSan: tools/fuzz.sh
  chromium libpng-dev fonts-dejavu-core        # PNG plots; the HTML report's browser test
  libcairo2-dev                                # PNG plots drawn by cairo (text, anti-aliasing)
  ccache                                       # compiler cache: warm rebuilds, fresh clones
  zlib1g-dev libjpeg-dev                       # gzip (IDX files), JPEG (image folders)
  python3-torch python3-torchvision            # PyTorch and PIL as references in tests
  python3-sklearn                              # scikit-learn: the reference for the eval metrics
  python3-optuna                               # Optuna: the TPE sweeper (--sweeper optuna)
  dataset-fashion-mnist                        # Fashion-MNIST (IDX): the transferability zoo
)
# A real one-node SLURM cluster for the cluster test (tools/slurm/local-cluster.sh). Optional:
# when they cannot be installed, that test is skipped with a message, everything else runs.
optional=(slurm-wlm munge)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
missing_optional=()
for p in "${optional[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing_optional+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
  echo "[setup] all $((${#packages[@]} + ${#optional[@]})) packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  if [ ${#missing[@]} -eq 0 ]; then
    echo "[setup] warning: no root or sudo to install ${missing_optional[*]}; the SLURM cluster test will be skipped" >&2
    exit 0
  fi
  echo "[setup] need root or sudo to install: ${missing[*]} ${missing_optional[*]}" >&2
  exit 1
fi
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
if [ ${#missing_optional[@]} -gt 0 ]; then
  echo "[setup] installing (optional): ${missing_optional[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing_optional[@]}" ||
    echo "[setup] warning: could not install ${missing_optional[*]}; the SLURM cluster test will be skipped" >&2
fi
