#!/usr/bin/env bash
# Peak memory of static calibration on a large checkpoint: a synthetic bf16 Llama of GIB
# gibibytes (bench/make_llama.py: hidden 2048, 86 MiB blocks, tied embeddings) calibrated
# with SEQUENCES random sequences of 512 tokens (one a batch), int8 static, written as
# compressed-tensors; the whole run's peak RSS (GNU time) against the checkpoint's size
# and one block's. QUANTIZER=gptq: sequential GPTQ, int4 groups of 128, instead.
#   cmake --preset default && cmake --build --preset default && bench/calibrate_memory.sh [GIB] [SEQUENCES]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
work=$(realpath -m "${WORK_DIR:-$build/bench-calibrate}")
gib=${1:-4}
sequences=${2:-8}
quantizer="{plugin: static, options: {dtype: int8}}"
[ "${QUANTIZER:-static}" = gptq ] && quantizer="{plugin: gptq, options: {dtype: int4, group_size: 128}}"
mkdir -p "$work"
model="$work/llama-${gib}g"
[ -f "$model/config.json" ] || /usr/bin/python3 bench/make_llama.py "$model" "$gib"
cat > "$work/recipe.yaml" <<YAML
version: 1
model: {path: $model}
calibration: {random: {shape: [1, 512], batches: $sequences, seed: 0, vocab_size: 32000}}
observer: {plugin: minmax}
quantizer: $quantizer
format: {plugin: safetensors, output: $work/out}
validators: []
report: $work/report.json
YAML
rm -rf "$work/out"
/usr/bin/time -f "%M %e" -o "$work/time.txt" "$build/bin/mq-pipeline" run -q "$work/recipe.yaml"
read -r peak_kb seconds < "$work/time.txt"
/usr/bin/python3 - "$model" "$work/report.json" "$peak_kb" "$seconds" "$sequences" <<'PY'
import json, os, sys
model, report, peak_kb, seconds, sequences = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
config = json.load(open(os.path.join(model, "config.json")))
weights = os.path.getsize(os.path.join(model, "model.safetensors"))
blocks = config["num_hidden_layers"]
block = (weights - config["vocab_size"] * config["hidden_size"] * 2) / blocks
timings = json.load(open(report))["timings_s"]
quantize = timings["quantize and write"]
print(f"{weights / 2**30:.2f} GiB bf16, {blocks} blocks of {block / 2**20:.0f} MiB, {sequences} x 512 tokens: "
      f"peak RSS {peak_kb / 1024:.0f} MiB ({peak_kb * 1024 / weights:.2f} of the checkpoint), whole run {seconds:.0f} s, "
      f"calibrate, quantize and write {quantize:.0f} s ({quantize / blocks / sequences:.2f} s a block a sequence)")
PY
