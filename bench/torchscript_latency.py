#!/usr/bin/env python3
"""TorchScript int8 forward latency and accuracy: mq's pt output against the module
PyTorch's own quantize_dynamic produces, on an MLP 1024-4096-1024, one thread, onednn
(the quantized engine Debian's LibTorch has). fp32 runs with OPENBLAS_CORETYPE set so
OpenBLAS uses this CPU's kernels (bench/run.sh sets it). Prints JSON.
usage: torchscript_latency.py MQ_PIPELINE WORK_DIR"""
import json
import math
import os
import subprocess
import sys
import time

import torch


def sqnr(ref, out):
    noise = (ref.double() - out.double()).pow(2).mean().item()
    return 10 * math.log10(ref.double().pow(2).mean().item() / noise)


def best_ms(module, x, repeat=200):
    with torch.no_grad():
        for _ in range(10):
            module(x)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeat):
                module(x)
            times.append((time.perf_counter() - start) / repeat * 1e3)
    return min(times)


def main(exe, work):
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "onednn"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)).eval()
    source = os.path.join(work, "mlp_1024_4096_1024.pt")
    torch.jit.save(torch.jit.script(model), source)
    recipe = os.path.join(work, "recipe.yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {source}, options: {{trust_torchscript: true}}}}
quantizer: {{plugin: dynamic, options: {{dtype: int8, granularity: per_channel, scheme: symmetric}}}}
format: {{plugin: pt, output: {os.path.join(work, "mq.int8.pt")}}}
""")
    subprocess.run([exe, "run", recipe, "--quiet"], check=True)
    ours = torch.jit.load(os.path.join(work, "mq.int8.pt"))
    theirs = torch.jit.script(torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8))
    x64, x1 = torch.randn(64, 1024), torch.randn(1, 1024)
    with torch.no_grad():
        ref = model(x64)
        out = {"mq_sqnr_db": sqnr(ref, ours(x64)), "torch_sqnr_db": sqnr(ref, theirs(x64))}
    for name, module in (("fp32", model), ("mq", ours), ("torch", theirs)):
        out[f"{name}_ms_batch64"] = best_ms(module, x64, 50)
        out[f"{name}_ms_batch1"] = best_ms(module, x1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
