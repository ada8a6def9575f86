#!/usr/bin/env python3
"""TorchScript int8 forward latency and accuracy: mq's pt output (int8 symmetric weights
per tensor, as PyTorch's default, and per channel) against the module PyTorch's own
quantize_dynamic produces, on an MLP 1024-4096-1024, one thread, onednn
(the quantized engine Debian's LibTorch has). fp32 runs with OPENBLAS_CORETYPE set so
OpenBLAS uses this CPU's kernels (bench/run.sh sets it). Prints JSON.
usage: torchscript_latency.py MQ_PIPELINE WORK_DIR"""
import copy
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


def best_ms(modules, x, repeat):
    """Min over rounds of the mean time per forward; the modules take turns in each
    round so that a noisy moment on a shared machine does not land on one of them."""
    best = {name: math.inf for name in modules}
    with torch.no_grad():
        for module in modules.values():
            for _ in range(10):
                module(x)
        for _ in range(7):
            for name, module in modules.items():
                start = time.perf_counter()
                for _ in range(repeat):
                    module(x)
                best[name] = min(best[name], (time.perf_counter() - start) / repeat * 1e3)
    return best


def static_mq(exe, work, source):
    """mq's static W8A8 TorchScript: per-channel weights, uint8 affine input and output
    qparams (PyTorch's static activations) from the histogram observer (as PyTorch's onednn
    qconfig) over eight random batches of 64."""
    recipe, output = os.path.join(work, "static.yaml"), os.path.join(work, "mq.int8.static.pt")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {source}, options: {{trust_torchscript: true}}}}
calibration: {{random: {{shape: [64, 1024], batches: 8, seed: 0}}}}
observer: {{plugin: histogram}}
quantizer: {{plugin: static, options: {{dtype: int8, granularity: per_channel, scheme: symmetric,
            activation_dtype: uint8, activation_scheme: asymmetric}}}}
format: {{plugin: pt, output: {output}}}
""")
    subprocess.run([exe, "run", recipe, "--quiet"], check=True)
    return torch.jit.load(output)


def static_torch(model):
    """PyTorch's eager static flow on the same layers (onednn qconfig, quint8
    activations), calibrated on eight random batches of 64, scripted. QuantStub and
    DeQuantStub are torch.ao's markers for where convert() quantizes the input and
    dequantizes the output."""
    class Static(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.body = copy.deepcopy(model)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.body(self.quant(x)))

    static = Static().eval()
    static.qconfig = torch.ao.quantization.get_default_qconfig("onednn")
    prepared = torch.ao.quantization.prepare(static)
    with torch.no_grad():
        for _ in range(8):
            prepared(torch.randn(64, 1024))
    return torch.jit.script(torch.ao.quantization.convert(prepared))


def main(exe, work):
    work = os.path.abspath(work)
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "onednn"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)).eval()
    source = os.path.join(work, "mlp_1024_4096_1024.pt")
    torch.jit.save(torch.jit.script(model), source)
    ours = {}
    for granularity in ("per_tensor", "per_channel"):
        recipe = os.path.join(work, f"{granularity}.yaml")
        output = os.path.join(work, f"mq.int8.{granularity}.pt")
        with open(recipe, "w") as f:
            f.write(f"""version: 1
model: {{path: {source}, options: {{trust_torchscript: true}}}}
quantizer: {{plugin: dynamic, options: {{dtype: int8, granularity: {granularity}, scheme: symmetric}}}}
format: {{plugin: pt, output: {output}}}
""")
        subprocess.run([exe, "run", recipe, "--quiet"], check=True)
        ours[f"mq_{granularity}"] = torch.jit.load(output)
    ours["mq_static"] = static_mq(exe, work, source)
    theirs = torch.jit.script(torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8))
    x64, x1 = torch.randn(64, 1024), torch.randn(1, 1024)
    with torch.no_grad():
        ref = model(x64)
        modules = {"fp32": model, "torch": theirs, "torch_static": static_torch(model), **ours}
        out = {f"{name}_sqnr_db": sqnr(ref, m(x64)) for name, m in modules.items() if name != "fp32"}
    for batch, x, repeat in (("64", x64, 50), ("1", x1, 200)):
        for name, ms in best_ms(modules, x, repeat).items():
            out[f"{name}_ms_batch{batch}"] = ms
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
