#!/usr/bin/env bash
# GPTQ side by side with llm-compressor (bench/llmcompressor_gptq.py): the same random
# Llama with outlier channels (LAYERS blocks of HIDDEN), the same SAMPLES x SEQ calibration
# ids, W4A16 (int4 groups of 128, activation order ACTORDER=weight (static, the default) or group); wall time and peak RSS of each
# whole process, and the held-out KL transformers + compressed-tensors measure on both
# artifacts. The venv (bench/requirements-llmcompressor.txt, ~7 GB) is made on first use
# in LLMC_VENV (default build/llmc-venv).
#   cmake --preset default && cmake --build --preset default && bench/llmcompressor.sh [LAYERS] [HIDDEN] [SAMPLES] [SEQ]
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${BUILD_DIR:-build}")
venv=$(realpath -m "${LLMC_VENV:-$build/llmc-venv}")
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r bench/requirements-llmcompressor.txt
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} "$venv/bin/python" bench/llmcompressor_gptq.py "$build/bin/mq-pipeline" \
  "$(realpath -m "${WORK_DIR:-$build/bench-llmcompressor}")" "${1:-8}" "${2:-1024}" "${3:-64}" "${4:-512}"
