#!/usr/bin/env bash
# Runs the benchmarks beside PyTorch on this machine and writes bench/results.md.
#   cmake --preset default && cmake --build --preset default && bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
out=bench/results.md
"$build/bin/mq_bench" --benchmark_min_time=2 --benchmark_out=bench/results.json --benchmark_out_format=json > /dev/null
/usr/bin/python3 bench/torch_quantize.py > bench/torch_results.json
# OpenBLAS picks slow SSE3 kernels on this CPU unless told its family (fp32 reference).
OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SKYLAKEX} /usr/bin/python3 bench/torchscript_latency.py \
  "$build/bin/mq-pipeline" "$build/bench-work" > bench/torchscript_results.json
/usr/bin/python3 - "$out" <<'PY'
import json, platform, subprocess, sys
mq = json.load(open("bench/results.json"))
torch = json.load(open("bench/torch_results.json"))
ts = json.load(open("bench/torchscript_results.json"))
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [f"Measured by `bench/run.sh` on {cpu}, {mq['context']['num_cpus']} CPUs; 512 MiB of fp32 input.", "",
         "| benchmark | threads | GB/s of input |", "|---|---|---|"]
for b in mq["benchmarks"]:
    name, threads = b["name"].split("/")[0], b["name"].split("/")[1]
    lines.append(f"| mq {name[3:]} | {threads} | {b['bytes_per_second'] / 1e9:.2f} |")
for key, value in torch.items():
    if key.endswith("GBps"):
        lines.append(f"| PyTorch {key[:-5]} | {key.split('_')[-2][0]} | {value:.2f} |")
lines += ["", "PyTorch HistogramObserver, rows of 8192 per second: " + " / ".join(
              f"{torch[f'torch_histogram_observer_{t}t_rows_per_s']:.0f}" for t in (1, 2)) + " (1 / 2 threads).",
          "", "TorchScript MLP 1024-4096-1024, one thread, onednn (ms per forward; output SQNR vs fp32):", "",
          "| module | batch 64 | batch 1 | SQNR dB |", "|---|---|---|---|"]
for name, label in (("fp32", "fp32 (OpenBLAS)"), ("torch", "PyTorch quantize_dynamic"),
                    ("mq_per_tensor", "mq pt output, per tensor"), ("mq_per_channel", "mq pt output, per channel"),
                    ("torch_static", "PyTorch static (eager flow, onednn qconfig)"),
                    ("mq_static", "mq pt output, static W8A8")):
    db = f"{ts[name + '_sqnr_db']:.2f}" if name != "fp32" else ""
    lines.append(f"| {label} | {ts[name + '_ms_batch64']:.3f} | {ts[name + '_ms_batch1']:.3f} | {db} |")
lines += ["", "TorchScript CNN (three 3x3 Conv2d with ReLU, pooling, Linear), 16 x 3 x 64 x 64, one thread:", "",
          "| module | ms | SQNR dB |", "|---|---|---|"]
for name, label in (("fp32", "fp32"), ("torch_static", "PyTorch static (eager flow, Conv+ReLU fused)"),
                    ("mq_static", "mq pt output, static W8A8")):
    db = f"{ts['cnn_' + name + '_sqnr_db']:.2f}" if name != "fp32" else ""
    lines.append(f"| {label} | {ts['cnn_' + name + '_ms_batch16']:.3f} | {db} |")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
cat "$out"
