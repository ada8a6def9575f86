#!/usr/bin/env bash
# A model of many small tensors (an MoE checkpoint has 30,000-100,000): `mq-pipeline run`
# with every validator and both reports, safetensors int8 per channel; prints each
# stage's time. What it measures is per-tensor work growing with the count (lookups by
# name, JSON headers), not bandwidth.
#   cmake --preset default && cmake --build --preset default && bench/many_tensors.sh [LAYERS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
layers=${1:-30000}
work=$(realpath -m "${WORK_DIR:-$build/bench-many-tensors}")
mkdir -p "$work"
model=model-$layers.safetensors
[ -f "$work/$model" ] || /usr/bin/python3 - "$work/$model" "$layers" <<'PY'
import json, struct, sys
import torch
out, layers = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
header, blobs, offset = {}, [], 0
for i in range(layers):  # a 16x16 Linear with its bias, and a norm
    for name, shape in ((f"layers.{i}.fc.weight", (16, 16)), (f"layers.{i}.fc.bias", (16,)), (f"layers.{i}.norm.weight", (16,))):
        data = torch.randn(*shape).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
PY
cat > "$work/recipe.yaml" <<YAML
version: 1
model: {path: $model}
quantizer: {plugin: dynamic, options: {dtype: int8}}
format: {plugin: safetensors, output: model.int8.safetensors}
validators: [{plugin: sqnr}, {plugin: size}, {plugin: load_run}, {plugin: range}]
report: report.json
html_report: report.html
YAML
/usr/bin/time -f "%e" -o "$work/time.txt" "$build/bin/mq-pipeline" run "$work/recipe.yaml" --quiet
read -r seconds < "$work/time.txt"
/usr/bin/python3 - "$work/report.json" "$layers" "$seconds" <<'PY'
import json, sys
report, layers, seconds = json.load(open(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3])
stages = ", ".join(f"{stage} {s:.2f} s" for stage, s in report["timings_s"].items())
print(f"{3 * layers} tensors: wall {seconds:.2f} s; {stages}")
PY
/usr/bin/time -f "inspect: %e s" "$build/bin/mq-pipeline" inspect "$work/$model" > /dev/null
