#!/usr/bin/env python3
"""TorchScript int8 forward latency and accuracy: mq's pt output (int8 symmetric weights
per tensor, as PyTorch's default, and per channel) against the module PyTorch's own
quantize_dynamic produces, on an MLP 1024-4096-1024, one thread, onednn
(the quantized engine Debian's LibTorch has); static W8A8 against PyTorch's eager static
flow on that MLP and on a small CNN (cnn_* keys). fp32 runs with OPENBLAS_CORETYPE set so
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


class Cnn(torch.nn.Module):
    """Three 3x3 Conv2d with ReLU (one of stride 2), global pooling, Linear."""
    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU()
        self.conv2, self.relu2 = torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.ReLU()
        self.conv3, self.relu3 = torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = self.relu3(self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x))))))
        return self.fc(torch.flatten(self.pool(x), 1))


def static_mq(exe, work, source, shape, name):
    """mq's static W8A8 TorchScript: per-channel weights, uint8 affine input and output
    qparams (PyTorch's static activations) from the histogram observer (as PyTorch's onednn
    qconfig) over eight random batches of `shape`."""
    recipe, output = os.path.join(work, f"{name}.yaml"), os.path.join(work, f"mq.int8.{name}.pt")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {source}, options: {{trust_torchscript: true}}}}
calibration: {{random: {{shape: {list(shape)}, batches: 8, seed: 0}}}}
observer: {{plugin: histogram}}
quantizer: {{plugin: static, options: {{dtype: int8, granularity: per_channel, scheme: symmetric,
            activation_dtype: uint8, activation_scheme: asymmetric, layers: {{types: [Conv2d, Linear]}}}}}}
format: {{plugin: pt, output: {output}}}
""")
    subprocess.run([exe, "run", recipe, "--quiet"], check=True)
    return torch.jit.load(output)


def static_torch(model, shape, fuse=()):
    """PyTorch's eager static flow on the same layers (onednn qconfig, quint8
    activations; `fuse`: the Conv+ReLU pairs fused first, as its tutorials do),
    calibrated on eight random batches of `shape`, scripted. torch.ao's QuantWrapper
    marks where convert() quantizes the input and dequantizes the output."""
    static = torch.ao.quantization.QuantWrapper(copy.deepcopy(model)).eval()
    if fuse:
        torch.ao.quantization.fuse_modules(static, [[f"module.{n}" for n in pair] for pair in fuse], inplace=True)
    static.qconfig = torch.ao.quantization.get_default_qconfig("onednn")
    prepared = torch.ao.quantization.prepare(static)
    with torch.no_grad():
        for _ in range(8):
            prepared(torch.randn(*shape))
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
    ours["mq_static"] = static_mq(exe, work, source, (64, 1024), "static")
    theirs = torch.jit.script(torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8))
    x64, x1 = torch.randn(64, 1024), torch.randn(1, 1024)
    with torch.no_grad():
        ref = model(x64)
        modules = {"fp32": model, "torch": theirs, "torch_static": static_torch(model, (64, 1024)), **ours}
        out = {f"{name}_sqnr_db": sqnr(ref, m(x64)) for name, m in modules.items() if name != "fp32"}
    for batch, x, repeat in (("64", x64, 50), ("1", x1, 200)):
        for name, ms in best_ms(modules, x, repeat).items():
            out[f"{name}_ms_batch{batch}"] = ms

    cnn = Cnn().eval()
    source = os.path.join(work, "cnn.pt")
    torch.jit.save(torch.jit.script(cnn), source)
    shape = (16, 3, 64, 64)
    fuse = [("conv1", "relu1"), ("conv2", "relu2"), ("conv3", "relu3")]
    modules = {"fp32": cnn, "torch_static": static_torch(cnn, shape, fuse),
               "mq_static": static_mq(exe, work, source, shape, "cnn")}
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = cnn(x)
        out.update({f"cnn_{name}_sqnr_db": sqnr(ref, m(x)) for name, m in modules.items() if name != "fp32"})
    for name, ms in best_ms(modules, x, 10).items():
        out[f"cnn_{name}_ms_batch16"] = ms
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
