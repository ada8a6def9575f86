#!/usr/bin/env bash
# Whole-run throughput and peak RSS of `mq-pipeline run` (safetensors fp32 -> int8
# per-channel safetensors; a pt state dict with FORMAT=pt; int4 group-128 with
# DTYPE=int4; from a torch.save'd pytorch_model.bin with INPUT=bin; no validators, or
# sqnr, range and load_run with VALIDATE=1) on a generated checkpoint, warm page cache.
#   cmake --preset default && cmake --build --preset default && [FORMAT=pt] [DTYPE=int4] [INPUT=bin] [VALIDATE=1] bench/whole_run.sh [GiB]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
gib=${1:-4}
format=${FORMAT:-safetensors}
dtype=${DTYPE:-int8}
granularity=$([ "$dtype" = int4 ] && echo per_group || echo per_channel)
output=model.$dtype.$format
work=$(realpath -m "${WORK_DIR:-$build/bench-whole-run}")
mkdir -p "$work"
model=$([ "${INPUT:-}" = bin ] && echo pytorch_model.bin || echo model.safetensors)
[ -f "$work/$model" ] || /usr/bin/python3 bench/make_checkpoint.py "$work/$model" "$gib"
cat > "$work/recipe.yaml" <<YAML
version: 1
model: {path: $model}
quantizer: {plugin: dynamic, options: {dtype: $dtype, granularity: $granularity, scheme: symmetric}}
format: {plugin: $format, output: $output}
validators: $([ -n "${VALIDATE:-}" ] && echo "[{plugin: sqnr}, {plugin: range}, {plugin: load_run}]" || echo "[]")
YAML
rm -f "$work/$output"
cat "$work/$model" > /dev/null  # warm the page cache
bytes=$(stat -c %s "$work/$model")
/usr/bin/time -f "%e %M" -o "$work/time.txt" \
  "$build/bin/mq-pipeline" run "$work/recipe.yaml" --quiet --set report=report.json
read -r seconds rss_kib < "$work/time.txt"
/usr/bin/python3 - "$work/report.json" "$bytes" "$seconds" "$rss_kib" <<'PY'
import json, sys
report, size, seconds, rss = json.load(open(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
stages = ", ".join(f"{stage} {s:.2f} s" for stage, s in report["timings_s"].items())
print(f"input {size / 2**30:.2f} GiB fp32; wall {seconds:.2f} s = {size / seconds / 1e9:.2f} GB/s; "
      f"peak RSS {rss / 2**20:.2f} GiB (largest tensor 0.06 GiB); {stages}")
PY
