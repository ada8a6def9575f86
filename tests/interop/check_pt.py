#!/usr/bin/env python3
"""Interop: what the pt format writes loads in Python's torch.
 - TorchScript out: torch.jit.load runs it on the onednn engine; its output SQNR against
   the float model is reported and must reach 38 dB; the quantized layers run int8 ops.
 - Static TorchScript out, Linear and Conv1d/Conv2d: qparams equal torch.ao's observers,
   layers run PyTorch's quantized kernels with the float layers' geometry.
 - State dict out: torch.load gives native per-channel qint8 tensors that dequantize to
   the original weights within half a step.
usage: check_pt.py MQ_PIPELINE SOURCE_DIR WORK_DIR
"""
import copy
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile

import torch


def state_dict_metadata(path):
    """mq's metadata of a state dict it wrote: a record of its own in the archive, beside
    the pickled dict, which holds tensors only."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/extra/mq.json"))
        return json.loads(z.read(name))


def sqnr(ref, out):
    noise = (ref.double() - out.double()).pow(2).mean().item()
    return math.inf if noise < 1e-10 else 10 * math.log10(ref.double().pow(2).mean().item() / noise)


def run(exe, recipe, out, *sets):
    args = [exe, "run", recipe, "--quiet", "--set", f"format.output={out}", "--set", "report=null",
            "--set", "html_report=null"]
    for s in sets:
        args += ["--set", s]
    subprocess.run(args, check=True)


def main(exe, source, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.backends.quantized.engine = "onednn"
    models = os.path.join(source, "configs", "models")

    out = os.path.join(work, "mlp.int8.pt")
    run(exe, os.path.join(source, "configs", "example-torchscript-int8.yaml"), out)
    quantized = torch.jit.load(out)
    original = torch.jit.load(os.path.join(models, "mlp.pt"))
    assert "ops.quantized.linear_dynamic" in quantized.fc1.code, quantized.fc1.code
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    with torch.no_grad():
        db = sqnr(original(x), quantized(x))
        start = time.perf_counter()
        for _ in range(20):
            quantized(x)
        ms = (time.perf_counter() - start) / 20 * 1e3
    print(f"TorchScript int8: output SQNR {db:.2f} dB, {ms:.3f} ms per batch of 64")
    assert db >= 38, f"output SQNR {db:.2f} dB"
    check_dynamic_shift(exe, source, work)

    out = os.path.join(work, "mlp.int8.state.pt")
    run(exe, os.path.join(source, "configs", "example-dynamic-int8.yaml"), out, "format.plugin=pt",
        "validators=[]")
    state = torch.load(out)
    weights = {}
    assert all(isinstance(v, torch.Tensor) for v in state.values()), [k for k, v in state.items()
                                                                      if not isinstance(v, torch.Tensor)]
    assert state_dict_metadata(out)["mq.recipe_hash"]
    for name in ("fc1.weight", "fc2.weight"):
        q = state[name]
        assert q.is_quantized and q.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine)
        assert q.dtype == torch.qint8
        weights[name] = q
    float_weights = {}
    with open(os.path.join(models, "mlp.safetensors"), "rb") as f:
        data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        for name in weights:
            b, e = header[name]["data_offsets"]
            float_weights[name] = torch.frombuffer(bytearray(data[8 + n + b:8 + n + e]), dtype=torch.float32) \
                .reshape(header[name]["shape"])
    for name, q in weights.items():
        err = (q.dequantize() - float_weights[name]).abs()
        step = q.q_per_channel_scales().float().unsqueeze(1)
        assert bool((err <= step * 0.5001).all()), name
        print(f"state dict {name}: qint8 per-channel, within half a step")
    assert state["fc1.bias"].dtype == torch.float32
    check_static(exe, source, work, models)
    check_static_pt(exe, source, work, models)
    check_static_conv(exe, source, work)
    check_transformer_encoder(exe, source, work)
    check_recurrent(exe, source, work)
    check_batchnorm(exe, source, work)
    check_init(exe, work)
    check_token_calibration(exe, source, work)
    check_python_quantized_state_dict(exe, work)
    check_crafted_views(exe, work)
    check_state_dict_input(exe, source, work)
    check_int4_state_dict(exe, source, work, float_weights)
    print("ok: TorchScript and state-dict outputs load and run in Python torch; static scales match PyTorch")


def onednn_matmuls(path):
    """How many matmuls onednn runs while Python loads the TorchScript `path` (onednn's
    verbose log, in a process of its own)."""
    code = f"import torch; torch.backends.quantized.engine = 'onednn'; torch.jit.load({path!r})"
    log = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                         capture_output=True, text=True, check=True).stdout
    return sum(line.startswith("onednn_verbose,exec,cpu,matmul,") for line in log.splitlines())


def check_dynamic_shift(exe, source, work):
    """A dynamic Linear primes onednn's kernel with a dummy call where it is loaded, also
    when saved again after it ran (the first call's shape gets a slower path), and since the other path caches primitives without their
    zero point, shifts a negative input to start at 0 and adds the shift back through its
    weights' row sums: the output follows the float layer for signed, non-negative, 3-D
    and empty inputs, per tensor and per channel, and for batches whose qparams differ
    in zero point only."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Linear(96, 32)).eval()
    model_path = os.path.join(work, "linears.pt")
    torch.jit.script(model).save(model_path)
    for granularity in ("per_tensor", "per_channel"):
        out = os.path.join(work, f"linears.{granularity}.pt")
        run(exe, os.path.join(source, "configs", "example-torchscript-int8.yaml"), out, f"model.path={model_path}",
            f"quantizer.options.granularity={granularity}", "validators=[]")
        assert onednn_matmuls(out) == 2, "loading should prime each layer with one call"
        quantized = torch.jit.load(out)
        assert "weight_row_sums" in getattr(quantized, "0").code
        with torch.no_grad():
            for x in (torch.randn(64, 64) * 3 - 5, torch.rand(8, 64), torch.randn(2, 5, 64), torch.randn(1, 64),
                      torch.randn(97, 64)):  # 97 rows: the priming call's shape
                db = sqnr(model(x), quantized(x))
                assert db >= 35, f"{granularity}, input {tuple(x.shape)}: output SQNR {db:.2f} dB"
            assert quantized(torch.randn(0, 64)).shape == (0, 32)
            # Batches of one range width (one scale) and other minimums (zero points): the
            # kernel's primitive cache ignores zero points, so each must be 0.
            for low in (-1.0, -3.0, 0.0, -2.0):
                x = torch.rand(4, 64) * 4 + low
                x[0, 0], x[0, 1] = low, low + 4
                db = sqnr(model(x), quantized(x))
                assert db >= 35, f"{granularity}, input in [{low}, {low + 4}]: output SQNR {db:.2f} dB"
        resaved = os.path.join(work, f"linears.{granularity}.resaved.pt")
        torch.jit.save(quantized, resaved)  # after it ran: primed again when loaded
        assert onednn_matmuls(resaved) == 2, "a module saved after it ran should be primed when loaded"
    print("dynamic TorchScript: primed when loaded (saved again too), negative inputs shifted to zero point 0; "
          "signed, non-negative, 3-D, empty inputs follow the float model (>= 35 dB)")


def check_int4_state_dict(exe, source, work, float_weights):
    """int4 group-wise in a state dict: NAME_packed (int32, eight values a word, element 0
    in the lowest bits, value + 8 for int4), NAME_shape, NAME_scale and NAME_zero_point
    per (row, group), unpacked and dequantized here with torch ops alone."""
    out = os.path.join(work, "mlp.int4.state.pt")
    run(exe, os.path.join(source, "configs", "example-dynamic-int8.yaml"), out, "format.plugin=pt",
        "quantizer.options.dtype=int4", "quantizer.options.granularity=per_group",
        "quantizer.options.group_size=32", "validators=[]")
    state = torch.load(out)
    meta = state_dict_metadata(out)
    for name, w in float_weights.items():
        assert meta["mq.specs"][name]["dtype"] == "int4", meta["mq.specs"]
        packed, shape = state[name + "_packed"], state[name + "_shape"].tolist()
        assert packed.dtype == torch.int32 and shape == list(w.shape), (packed.dtype, shape)
        shifts = torch.arange(8, dtype=torch.int64) * 4
        nibbles = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & 0xF
        q = (nibbles.reshape(packed.shape[0], -1)[:, : shape[1]] - 8).float()
        scale = state[name + "_scale"].float().repeat_interleave(32, dim=1)[:, : shape[1]]
        zero = state[name + "_zero_point"].float().repeat_interleave(32, dim=1)[:, : shape[1]]
        err = ((q - zero) * scale - w).abs()
        assert bool((err <= scale * 0.5001).all()), name
        print(f"state dict {name}: int4 group-32 unpacked by torch ops, within half a step")


class Evil:
    """A pickle that would run code if the reader executed globals."""
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def check_state_dict_input(exe, source, work):
    """torch.save(model.state_dict()) (an OrderedDict) reads without running code."""
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("fc1", torch.nn.Linear(64, 128))
    model.add_module("fc2", torch.nn.Linear(128, 64))
    torch.save(model.state_dict(), os.path.join(work, "state.pt"))
    recipe = os.path.join(work, "state.yaml")
    with open(recipe, "w") as f:
        f.write("version: 1\nmodel: {path: state.pt}\nquantizer: {plugin: dynamic}\n"
                "format: {plugin: pt, output: state.int8.pt}\nvalidators: [{plugin: sqnr, options: {min_db: 35}}, "
                "{plugin: load_run}, {plugin: range}]\n")
    subprocess.run([exe, "run", recipe, "--quiet"], check=True)
    state = torch.load(os.path.join(work, "state.int8.pt"))
    assert state["fc1.weight"].is_quantized and tuple(state["fc1.weight"].shape) == (128, 64)
    assert torch.equal(state["fc1.bias"], model.fc1.bias.detach())
    # transformers' pytorch_model.bin (save_pretrained without safetensors) is the same
    # torch.save'd state dict: found by its name as a .pt is, and quantized alike.
    torch.save(model.state_dict(), os.path.join(work, "pytorch_model.bin"))
    subprocess.run([exe, "run", recipe, "--quiet", "--set", "model.path=pytorch_model.bin",
                    "--set", "format.output=bin.int8.pt"], check=True)
    from_bin = torch.load(os.path.join(work, "bin.int8.pt"))
    assert torch.equal(from_bin["fc1.weight"].int_repr(), state["fc1.weight"].int_repr())
    listed = subprocess.run([exe, "inspect", os.path.join(work, "pytorch_model.bin")], capture_output=True, text=True)
    assert listed.returncode == 0 and "fc2.weight" in listed.stdout, (listed.returncode, listed.stderr)
    check_hf_bin_directory(exe, recipe, work, model.state_dict(), state)
    # The same archive with its records deflated (not what torch.save writes, but a zip
    # all the same): its storages cannot be mapped, and are read.
    with zipfile.ZipFile(os.path.join(work, "state.pt")) as src, \
            zipfile.ZipFile(os.path.join(work, "deflated.pt"), "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
    subprocess.run([exe, "run", recipe, "--quiet", "--set", "model.path=deflated.pt",
                    "--set", "format.output=deflated.int8.pt"], check=True)
    from_deflated = torch.load(os.path.join(work, "deflated.int8.pt"))
    assert torch.equal(from_deflated["fc1.weight"].int_repr(), state["fc1.weight"].int_repr())
    torch.save({"w": Evil()}, os.path.join(work, "evil.pt"))
    bad = subprocess.run([exe, "run", recipe, "--quiet", "--set", "model.path=evil.pt"], cwd=work,
                         capture_output=True, text=True)
    assert bad.returncode == 3, (bad.returncode, bad.stderr)
    assert "refusing to load 'posix.system'" in bad.stderr, bad.stderr
    assert not os.path.exists(os.path.join(work, "pwned")), "the pickle ran code"
    # A malformed pickle (BINGET of a memo slot never set) is a bad input file, exit 3,
    # for LibTorch's unpickler (inspect, validate) as for ours (model input).
    broken = os.path.join(work, "broken.pt")
    with zipfile.ZipFile(broken, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02h\x05.")
        z.writestr("archive/version", b"3\n")
    for args in (["inspect", broken], ["run", recipe, "--quiet", "--set", f"model.path={broken}"]):
        bad = subprocess.run([exe] + args, cwd=work, capture_output=True, text=True)
        assert bad.returncode == 3 and bad.stderr.count("\n") == 1, (args, bad.returncode, bad.stderr)
    # A key Python can only pickle with a lone surrogate (not UTF-8): refused, exit 3.
    torch.save({"fc1\udcff.weight": torch.zeros(4, 4)}, os.path.join(work, "surrogate.pt"))
    bad = subprocess.run([exe, "run", recipe, "--quiet", "--set", "model.path=surrogate.pt"], cwd=work,
                         capture_output=True, text=True, errors="replace")
    assert bad.returncode == 3 and "a string is not UTF-8" in bad.stderr, (bad.returncode, bad.stderr)
    print("state dict in: OrderedDict read (as .pt and as pytorch_model.bin), code-carrying pickle refused, "
          "malformed pickle refused")


def check_hf_bin_directory(exe, recipe, work, state, quantized):
    """An HF directory saved without safetensors (save_pretrained(safe_serialization=False)
    past its shard size): the .bin shards and their index in, an HF directory of
    safetensors out, its config.json gaining the quantization_config, the shards left
    behind, the other files copied."""
    hf = os.path.join(work, "hf-bin")
    os.makedirs(hf, exist_ok=True)
    shards = {"pytorch_model-00001-of-00002.bin": ["fc1.weight", "fc1.bias"],
              "pytorch_model-00002-of-00002.bin": ["fc2.weight", "fc2.bias"]}
    for shard, names in shards.items():
        torch.save({name: state[name] for name in names}, os.path.join(hf, shard))
    with open(os.path.join(hf, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {n: shard for shard, names in shards.items() for n in names}}, f)
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({"architectures": ["TwoLayers"]}, f)
    with open(os.path.join(hf, "tokenizer.json"), "w") as f:
        f.write("{}")
    subprocess.run([exe, "run", recipe, "--quiet", "--set", "model.path=hf-bin", "--set", "format.plugin=safetensors",
                    "--set", "format.output=hf-bin.int8"], check=True)
    out = os.path.join(work, "hf-bin.int8")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json"], os.listdir(out)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == ["TwoLayers"], config
    assert config["quantization_config"]["quant_method"] == "compressed-tensors", config
    tensors = read_safetensors(os.path.join(out, "model.safetensors"))
    assert torch.equal(tensors["fc1.weight"], quantized["fc1.weight"].int_repr()), "not the int8 of the .pt output"
    assert torch.equal(tensors["fc2.bias"], state["fc2.bias"])
    listed = subprocess.run([exe, "inspect", hf], capture_output=True, text=True)
    assert listed.returncode == 0 and "fc2.weight" in listed.stdout, (listed.returncode, listed.stderr)
    print("HF directory of pytorch_model.bin shards in: an HF directory of safetensors out")


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dtype = {"F32": torch.float32, "I8": torch.int8}[info["dtype"]]
        out[name] = torch.frombuffer(bytearray(data[8 + n + b:8 + n + e]), dtype=dtype).reshape(info["shape"])
    return out


def check_static(exe, source, work, models):
    """Static input scales equal torch.ao's MinMaxObserver over the same layer inputs."""
    out = os.path.join(work, "mlp.static.safetensors")
    run(exe, os.path.join(source, "configs", "example-static-int8.yaml"), out, "observer.plugin=minmax")
    tensors = read_safetensors(out)
    model = torch.jit.load(os.path.join(models, "mlp.pt"))
    batches = list(read_safetensors(os.path.join(models, "calibration.safetensors")).values())
    observers = {name: torch.ao.quantization.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
                 for name in ("fc1", "fc2")}
    with torch.no_grad():
        for x in batches:
            observers["fc1"](x)
            observers["fc2"](model.act(model.fc1(x)))
    for name, observer in observers.items():
        scale, _ = observer.calculate_qparams()
        got = tensors[name + ".input_scale"]
        print(f"static {name}.input_scale {got.item():.8g}, PyTorch {scale.item():.8g}")
        assert torch.equal(got.reshape(-1), scale.reshape(-1).float()), (got, scale)
    check_pt_calibration(exe, source, work, batches, tensors)


def check_pt_calibration(exe, source, work, batches, expected):
    """Calibration batches saved by torch.save as a list, a tuple or a dict calibrate alike."""
    for kind, value in (("list", batches), ("tuple", tuple(batches)),
                        ("dict", {f"batch{i}": b for i, b in enumerate(batches)})):
        data = os.path.join(work, f"calibration.{kind}.pt")
        torch.save(value, data)
        out = os.path.join(work, f"mlp.static.{kind}.safetensors")
        run(exe, os.path.join(source, "configs", "example-static-int8.yaml"), out, "observer.plugin=minmax",
            f"calibration.path={data}")
        tensors = read_safetensors(out)
        for name in ("fc1", "fc2"):
            assert torch.equal(tensors[name + ".input_scale"], expected[name + ".input_scale"]), (kind, name)
    data = os.path.join(work, "calibration.mixed.pt")
    torch.save([batches[0], 3], data)
    bad = subprocess.run([exe, "run", os.path.join(source, "configs", "example-static-int8.yaml"), "--quiet",
                          "--set", f"calibration.path={data}", "--set", f"format.output={work}/never.safetensors",
                          "--set", "report=null"],
                         capture_output=True, text=True)
    assert bad.returncode == 3 and "the list has an item that is not a tensor" in bad.stderr, (bad.returncode, bad.stderr)
    assert not os.path.exists(os.path.join(work, "never.safetensors"))
    print("static calibration from torch.save'd list, tuple and dict: the same scales")


def check_static_pt(exe, source, work, models):
    """Static W8A8 to TorchScript: each Linear quantizes its input with the calibrated
    scale, runs quantized::linear to the calibrated output qparams (both equal to
    torch.ao's MinMaxObservers over the same calibration), and dequantizes, except where
    a layer feeds the next one; the module loads and runs in Python."""
    out = os.path.join(work, "mlp.static.pt")
    run(exe, os.path.join(source, "configs", "example-static-int8.yaml"), out, "observer.plugin=minmax",
        "format.plugin=pt")
    quantized = torch.jit.load(out)
    model = torch.jit.load(os.path.join(models, "mlp.pt"))
    assert "ops.quantized.linear(" in quantized.fc1.code and "quantize_per_tensor" in quantized.fc1.code, \
        quantized.fc1.code
    batches = list(read_safetensors(os.path.join(models, "calibration.safetensors")).values())
    inputs = {"fc1": [], "fc2": []}
    with torch.no_grad():
        for x in batches:
            inputs["fc1"].append(x)
            inputs["fc2"].append(model.act(model.fc1(x)))
    for name in ("fc1", "fc2"):
        layer = getattr(model, name)
        observe_in = torch.ao.quantization.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        observe_out = torch.ao.quantization.MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        with torch.no_grad():
            for x in inputs[name]:
                observe_in(x)
                observe_out(layer(x))
        in_scale, in_zp = observe_in.calculate_qparams()
        out_scale, out_zp = observe_out.calculate_qparams()
        q = getattr(quantized, name)
        # The int8 symmetric input runs as quint8 with its zero point moved by 128.
        assert (q.input_scale, q.input_zero_point) == (in_scale.float().item(), in_zp.item() + 128), \
            (q.input_scale, q.input_zero_point, in_scale, in_zp)
        assert (q.output_scale, q.output_zero_point) == (out_scale.float().item(), out_zp.item()), \
            (q.output_scale, q.output_zero_point, out_scale, out_zp)
    # fc1 -> ReLU -> fc2 runs as one chain of quantized tensors: fc1 with its ReLU
    # writes fc2's input qparams, and only fc2's output is dequantized.
    assert quantized.code.count("dequantize") == 1 and "ops.quantized.linear_relu(" in quantized.code, \
        quantized.code
    fc1, fc2 = quantized.fc1, quantized.fc2
    with torch.no_grad():
        x = torch.cat(batches)
        qx = torch.quantize_per_tensor(x, fc1.input_scale, fc1.input_zero_point, torch.quint8)
        h = torch.ops.quantized.linear_relu(qx, fc1._packed_params, fc2.input_scale, fc2.input_zero_point)
        y = torch.ops.quantized.linear(h, fc2._packed_params, fc2.output_scale, fc2.output_zero_point)
        assert torch.equal(quantized(x), model.norm(y.dequantize()))
        db = sqnr(model(x), quantized(x))
    print(f"TorchScript static int8: output SQNR {db:.2f} dB; input/output qparams equal torch.ao's")
    assert db >= 33, f"static output SQNR {db:.2f} dB"
    check_static_pt_shared_value(exe, source, work)


def check_static_pt_shared_value(exe, source, work):
    """A layer output that something else also reads stays a float tensor: only values
    used by the layer chain alone are handed on quantized."""
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(64, 128)
            self.fc2 = torch.nn.Linear(128, 64)

        def forward(self, x):
            y = self.fc1(x)
            return self.fc2(torch.relu(y)) + y.mean(-1, keepdim=True)

    torch.manual_seed(0)
    model = torch.jit.script(Shared().eval())
    source_path = os.path.join(work, "shared.pt")
    model.save(source_path)
    out = os.path.join(work, "shared.static.pt")
    run(exe, os.path.join(source, "configs", "example-static-int8.yaml"), out, "format.plugin=pt",
        f"model.path={source_path}", "model.options.trust_torchscript=true", "validators=[]")
    quantized = torch.jit.load(out)
    assert quantized.code.count("dequantize") == 2 and "linear_relu" not in quantized.code, quantized.code
    with torch.no_grad():
        x = torch.randn(64, 64)
        db = sqnr(model(x), quantized(x))
    print(f"TorchScript static int8, a layer output read twice: output SQNR {db:.2f} dB")
    assert db >= 30, f"static output SQNR {db:.2f} dB"



class Convs(torch.nn.Module):
    """Conv2d and Conv1d of assorted geometry, with pools between them."""
    def __init__(self, padding_mode="zeros"):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding="same", dilation=2, groups=2, padding_mode=padding_mode)
        self.conv3 = torch.nn.Conv1d(32, 16, 5, stride=2, padding=2)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):  # x: [batch, 3, 16, 16]
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.adaptive_avg_pool2d(self.conv2(x), 2)
        x = torch.relu(self.conv3(x.view(x.size(0), -1, x.size(3))))  # view: as float Conv gives, contiguous
        return self.fc(x.flatten(1))

    def layer_inputs(self, x):
        """Each layer's input on the float model, as the static flow observes it."""
        a = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        b = torch.nn.functional.adaptive_avg_pool2d(self.conv2(a), 2).reshape(x.size(0), -1, 2)
        return {"conv1": x, "conv2": a, "conv3": b, "fc": torch.relu(self.conv3(b)).flatten(1)}


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.enc = torch.nn.TransformerEncoder(layer, 2)
        self.head = torch.nn.Linear(32, 8)

    def forward(self, x):
        return self.head(self.enc(x))


def check_transformer_encoder(exe, source, work):
    """nn.TransformerEncoder: its layers read linear1/linear2's and MultiheadAttention's
    out_proj's weights themselves, so the TorchScript artifact keeps those Linears in
    float (as PyTorch keeps out_proj) and quantizes the rest; the artifact loads and runs
    in Python, also when written with no validators."""
    torch.manual_seed(0)
    model = Encoder().eval()
    model_path = os.path.join(work, "encoder.pt")
    torch.jit.script(model).save(model_path)
    recipe = os.path.join(source, "configs", "example-torchscript-int8.yaml")
    for validators in ("validators=[]", "validators=[{plugin: load_run}, {plugin: sqnr}]"):
        out = os.path.join(work, "encoder.int8.pt")
        report = os.path.join(work, "encoder.report.json")
        subprocess.run([exe, "run", recipe, "--quiet", "--set", f"model.path={model_path}", "--set",
                        f"format.output={out}", "--set", f"report={report}", "--set", "html_report=null",
                        "--set", "model.input={shape: [2, 5, 32]}", "--set", validators], check=True)
        quantized = torch.jit.load(out)
        assert "ops.quantized.linear_dynamic" in quantized.head.code, quantized.head.code
        layer = getattr(quantized.enc.layers, "0")
        assert layer.linear1.original_name == "Linear", layer.linear1.original_name
        x = torch.randn(2, 5, 32)
        with torch.no_grad():
            db = sqnr(model(x), quantized(x))
        assert db > 35, db
        rules = {row["tensor"]: row["rule"] for row in json.load(open(report))["layers"]}
        for name in ("enc.layers.0.linear1.weight", "enc.layers.1.self_attn.out_proj.weight"):
            assert "kept in float: TorchScript code reads its 'bias', 'weight'" in rules[name], rules[name]
    print(f"TorchScript TransformerEncoder int8: loads and runs in Python, {db:.2f} dB, weight-reading Linears float")


class Recurrent(torch.nn.Module):
    """Every recurrent kind PyTorch's quantize_dynamic takes, in both layouts, with and
    without a given state, and a bias-free one."""
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(16, 24, num_layers=2, batch_first=True)
        self.gru = torch.nn.GRU(24, 12, bidirectional=True)
        self.cell = torch.nn.LSTMCell(24, 8)
        self.gcell = torch.nn.GRUCell(8, 8, bias=False)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        z, _ = self.gru(y.transpose(0, 1))
        hx = torch.zeros(x.size(0), 8)
        h1, c1 = self.cell(z[-1, :, :24], (hx, hx))
        return self.fc(self.gcell(h1)) + c1.sum()


def check_recurrent(exe, source, work):
    """LSTM, GRU, LSTMCell and GRUCell become PyTorch's dynamic int8 recurrent kernels in
    the TorchScript artifact (torch.quantized_lstm and friends, as quantize_dynamic
    makes them); Python loads and runs it, batched and unbatched, and it follows the
    float model as closely as PyTorch's own quantize_dynamic does."""
    torch.manual_seed(0)
    model = Recurrent().eval()
    model_path = os.path.join(work, "recurrent.pt")
    torch.jit.script(model).save(model_path)
    out = os.path.join(work, "recurrent.int8.pt")
    run(exe, os.path.join(source, "configs", "example-torchscript-int8.yaml"), out, f"model.path={model_path}",
        "model.input={shape: [3, 5, 16]}")
    quantized = torch.jit.load(out)
    code = {name: "\n".join(m._c._get_method(method).code for method in m._c._method_names())
            for name, m in quantized.named_children()}
    assert "torch.quantized_lstm(" in code["lstm"], code["lstm"]
    assert "torch.quantized_gru(" in code["gru"], code["gru"]
    assert "quantized_lstm_cell_dynamic" in code["cell"] and "quantized_gru_cell_dynamic" in code["gcell"], code
    # PyTorch's own quantize_dynamic refuses the bias-free GRUCell (it asserts a bias): kept
    # float there.
    reference = torch.quantization.quantize_dynamic(
        model, {torch.nn.LSTM, torch.nn.GRU, torch.nn.LSTMCell, torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        ours, theirs = sqnr(model(x), quantized(x)), sqnr(model(x), reference(x))
        # unbatched: the layers' own handling of 2-D (1-D for cells) inputs
        single = {"lstm": torch.randn(5, 16), "gru": torch.randn(5, 24), "cell": torch.randn(24), "gcell": torch.randn(8)}
        for name, inp in single.items():
            a, b = getattr(model, name)(inp), getattr(quantized, name)(inp)
            a = a[0] if isinstance(a, tuple) else a
            b = b[0] if isinstance(b, tuple) else b
            assert a.shape == b.shape and sqnr(a, b) > 30, (name, a.shape, b.shape)
    print(f"TorchScript recurrent int8: {ours:.2f} dB (PyTorch's quantize_dynamic: {theirs:.2f} dB)")
    assert ours > 35 and ours > theirs - 3, (ours, theirs)


class Residual(torch.nn.Module):
    """Conv2d -> BatchNorm2d twice with a skip, as ResNet's blocks; Conv1d -> BatchNorm1d."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv1, self.bn1 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv3, self.bn3 = torch.nn.Conv1d(8, 8, 3), torch.nn.BatchNorm1d(8)
        self.fc = torch.nn.Linear(8, 4)
        for bn in (self.bn, self.bn1, self.bn2, self.bn3):  # trained statistics, not the identity
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)
        return self.fc(self.bn3(self.conv3(x.mean(3))).mean(2))


def check_batchnorm(exe, source, work):
    """Static int8 folds each BatchNorm2d into the Conv2d before it, as torch.ao's
    fuse_modules does: the artifact has no BatchNorm2d left, its Conv weights and biases
    are PyTorch's fused ones within int8 rounding, the report lists the folds, and the
    model follows the float one. `fold_batchnorm: false` keeps them."""
    torch.manual_seed(0)
    model = Residual().eval()
    model_path = os.path.join(work, "residual.pt")
    torch.jit.script(model).save(model_path)
    recipe = os.path.join(source, "configs", "example-cnn-static-int8.yaml")
    out, report = os.path.join(work, "residual.static.pt"), os.path.join(work, "residual.report.json")
    run(exe, recipe, out, f"model.path={model_path}", "quantizer.options.layers={}", f"report={report}")
    with open(report) as f:
        changes = json.load(f)["model_changes"]
    assert changes == [f"folded BatchNorm '{bn}' into Conv '{conv}'"
                       for conv, bn in (("stem", "bn"), ("conv1", "bn1"), ("conv2", "bn2"))], changes
    quantized = torch.jit.load(out)
    children = dict(quantized.named_children())
    assert not {"bn", "bn1", "bn2"} & children.keys() and "bn3" in children, children.keys()
    fused = torch.ao.quantization.fuse_modules(copy.deepcopy(model), [["stem", "bn"], ["conv1", "bn1"],
                                                                      ["conv2", "bn2"]])
    for name in ("stem", "conv1", "conv2"):
        weight, bias = getattr(quantized, name)._packed_params.unpack()
        assert sqnr(getattr(fused, name).weight, weight.dequantize()) >= 35, name
        assert torch.allclose(getattr(fused, name).bias, bias, atol=1e-5), name
    with torch.no_grad():
        x = torch.randn(16, 3, 32, 32)
        db = sqnr(model(x), quantized(x))
    print(f"TorchScript static with BatchNorm folded: output SQNR {db:.2f} dB")
    assert db >= 25, f"{db:.2f} dB"
    kept = os.path.join(work, "residual.unfolded.pt")
    run(exe, recipe, kept, f"model.path={model_path}", "model.options.fold_batchnorm=false", "validators=[]")
    assert {"bn", "bn1", "bn2"} <= dict(torch.jit.load(kept).named_children()).keys()


def check_init(exe, work):
    """`mq-pipeline init` on the kinds the C++ tests cannot make: a state dict saved by
    torch.save and a TorchScript LSTM. Each preset's recipe runs as written, and PyTorch
    loads what it made."""
    torch.manual_seed(0)
    state_path = os.path.join(work, "init-mlp.pth")
    torch.save(torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 64)).state_dict(), state_path)
    recurrent_path = os.path.join(work, "init-recurrent.pt")
    torch.jit.script(Recurrent().eval()).save(recurrent_path)
    for model, presets in ((state_path, ("w8a8-dynamic", "int4-weight-only", "fp16")),
                           (recurrent_path, ("w8a8-dynamic", "w8a8-static", "fp16"))):
        for preset in presets:
            recipe = os.path.join(work, f"init-{os.path.basename(model)}-{preset}.yaml")
            subprocess.run([exe, "init", model, "--preset", preset, "-o", recipe, "--trust-torchscript", "--force"],
                           check=True, capture_output=True)
            ran = subprocess.run([exe, "run", "-q", "--json", recipe], capture_output=True, text=True)
            assert ran.returncode == 0, (model, preset, ran.stderr)
            out = json.loads(ran.stdout)["output"]["path"]
            if out.endswith(".pt") and model == recurrent_path:
                torch.jit.load(out)(torch.randn(3, 5, 16))
            elif out.endswith(".pt"):
                assert all(isinstance(v, torch.Tensor) for v in torch.load(out).values()), out
    print("init: each preset's recipe runs on a state dict and a TorchScript LSTM; PyTorch loads the results")


def check_static_conv(exe, source, work):
    """Static W8A8 Conv2d and Conv1d into TorchScript: each runs quantized::conv2d or
    conv1d with the float layer's stride, padding ('same' included), dilation and groups;
    input and output qparams (and output through a ReLU) equal torch.ao's MinMaxObservers
    over the same calibration; quantized tensors go on through ReLU, pools and flatten. A Conv that pads by
    reflection is refused, and nothing is written."""
    torch.manual_seed(0)
    model = Convs().eval()
    model_path = os.path.join(work, "convs.pt")
    torch.jit.script(model).save(model_path)
    batches = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    calibration = os.path.join(work, "convs.calibration.pt")
    torch.save(batches, calibration)
    recipe = os.path.join(source, "configs", "example-cnn-static-int8.yaml")
    out = os.path.join(work, "convs.static.pt")
    run(exe, recipe, out, f"model.path={model_path}", f"calibration={{path: {calibration}}}",
        "observer.plugin=minmax", "quantizer.options.layers.types=[Conv1d, Conv2d, Linear]")
    quantized = torch.jit.load(out)
    # conv1 with its ReLU writes conv2's input, max-pooled quantized; conv2's output is
    # average-pooled quantized, then dequantized for the view and quantized again for
    # conv3 (an average of clipped values is not the clipped average); conv3 writes
    # fc's input, through a ReLU and flatten; fc's output is dequantized.
    code = quantized.code
    assert "ops.quantized.conv2d_relu(qx, _packed_params, input_scale0, input_zero_point0)" in code, code
    for pooled in ("torch.max_pool2d(_0, ", "torch.adaptive_avg_pool2d(qy, ", "torch.flatten(x2, 1)"):
        assert pooled in code, (pooled, code)
    assert code.count("quantize_per_tensor") == 2 and code.count("dequantize") == 2, code
    assert "conv1d_relu" not in code, code  # LibTorch 1.13's onednn conv1d_relu leaves the ReLU out
    assert "ops.quantized.conv1d(" in quantized.conv3.code, quantized.conv3.code
    with torch.no_grad():
        seen = [model.layer_inputs(x) for x in batches]
        for name in ("conv1", "conv2", "conv3", "fc"):
            layer = getattr(model, name)
            observe_in = torch.ao.quantization.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
            observe_out = torch.ao.quantization.MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
            observe_relu = torch.ao.quantization.MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
            for inputs in seen:
                observe_in(inputs[name])
                observe_out(layer(inputs[name]))
                observe_relu(torch.relu(layer(inputs[name])))
            q = getattr(quantized, name)
            for got, observer, shift in (((q.input_scale, q.input_zero_point), observe_in, 128),
                                         ((q.output_scale, q.output_zero_point), observe_out, 0),
                                         ((q.relu_output_scale, q.relu_output_zero_point), observe_relu, 0)):
                scale, zero_point = observer.calculate_qparams()
                assert got == (scale.float().item(), zero_point.item() + shift), (name, got, scale, zero_point)
            # The layer alone, on its calibration input: the float layer within int8 error.
            x = torch.cat([inputs[name] for inputs in seen])
            db = sqnr(layer(x), q(x))
            print(f"TorchScript static {name} ({type(layer).__name__}): layer output SQNR {db:.2f} dB")
            assert db >= 30, f"{name}: {db:.2f} dB"
        x = torch.cat(batches)
        db = sqnr(model(x), quantized(x))
    print(f"TorchScript static Conv2d/Conv1d/Linear model: output SQNR {db:.2f} dB; qparams equal torch.ao's")
    assert db >= 25, f"static conv output SQNR {db:.2f} dB"

    # An average pool between two layers keeps the first one's qparams: the second one's
    # input range fits the averages, not the values averaged.
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.conv_b = torch.nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.conv_b(torch.nn.functional.avg_pool2d(torch.relu(self.conv_a(x)), 2))

    pooled_path, pooled_out = os.path.join(work, "pooled.pt"), os.path.join(work, "pooled.static.pt")
    torch.jit.script(Pooled().eval()).save(pooled_path)
    run(exe, recipe, pooled_out, f"model.path={pooled_path}", f"calibration={{path: {calibration}}}")
    code = torch.jit.load(pooled_out).code
    assert "conv2d_relu(qx, _packed_params, relu_output_scale, relu_output_zero_point)" in code, code
    assert code.count("quantize_per_tensor") == 2 and "torch.avg_pool2d(_0, " in code, code

    reflect_path = os.path.join(work, "convs.reflect.pt")
    torch.jit.script(Convs(padding_mode="reflect").eval()).save(reflect_path)
    never = os.path.join(work, "convs.reflect.static.pt")
    bad = subprocess.run([exe, "run", recipe, "--quiet", "--set", f"model.path={reflect_path}",
                          "--set", f"calibration={{path: {calibration}}}", "--set", f"format.output={never}",
                          "--set", "report=null"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Conv layer 'conv2': PyTorch's quantized Conv pads with zeros only, not 'reflect'" \
        in bad.stderr, (bad.returncode, bad.stderr)
    assert not os.path.exists(never)


def check_token_calibration(exe, source, work):
    """A model that starts with an Embedding calibrates on token ids (int64 batches): the
    Embedding is weight-only (no input scale), the Linear after it gets torch.ao's input
    scale over the embedded batches. A batch of another dtype (bool) is refused."""
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 32)
            self.fc = torch.nn.Linear(32, 8)

        def forward(self, ids):
            return self.fc(self.emb(ids))

    torch.manual_seed(0)
    model = Tokens().eval()
    model_path, calibration = os.path.join(work, "tokens.pt"), os.path.join(work, "tokens.calibration.pt")
    torch.jit.script(model).save(model_path)
    batches = [torch.randint(0, 100, (4, 6)) for _ in range(3)]
    torch.save(batches, calibration)
    out = os.path.join(work, "tokens.static.safetensors")
    run(exe, os.path.join(source, "configs", "example-static-int8.yaml"), out, f"model.path={model_path}",
        f"calibration.path={calibration}", "observer.plugin=minmax", "quantizer.options.layers.types=[Embedding, Linear]",
        "validators=[{plugin: sqnr, options: {min_db: 35}}, {plugin: load_run}]")
    tensors = read_safetensors(out)
    assert tensors["emb.weight"].dtype == torch.int8 and "emb.input_scale" not in tensors, sorted(tensors)
    observer = torch.ao.quantization.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    with torch.no_grad():
        for ids in batches:
            observer(model.emb(ids))
    scale, _ = observer.calculate_qparams()
    assert torch.equal(tensors["fc.input_scale"].reshape(-1), scale.reshape(-1).float()), (tensors["fc.input_scale"], scale)
    torch.save([torch.ones(4, 6, dtype=torch.bool)], calibration)
    bad = subprocess.run([exe, "run", os.path.join(source, "configs", "example-static-int8.yaml"), "--quiet",
                          "--set", f"model.path={model_path}", "--set", f"calibration.path={calibration}",
                          "--set", f"format.output={work}/never.safetensors", "--set", "report=null"],
                         capture_output=True, text=True)
    assert bad.returncode == 3 and "calibration batch '0' is Bool, neither floating point nor integer" in bad.stderr, \
        (bad.returncode, bad.stderr)
    out = os.path.join(work, "tokens.random.safetensors")
    run(exe, os.path.join(source, "configs", "example-static-int8.yaml"), out, f"model.path={model_path}",
        "calibration={random: {shape: [4, 6], batches: 2, vocab_size: 100}}", "validators=[{plugin: load_run}]")
    assert "fc.input_scale" in read_safetensors(out)
    print("static on token ids (a file, or random ids below vocab_size): Embedding weight-only, "
          "fc input scale equals torch.ao's")


def check_python_quantized_state_dict(exe, work):
    """Quantized tensors saved by Python's torch.save are read by mq's own unpickler
    (inspect lists them with their schemes); a scale edited to be negative, or a zero
    point outside the integers' range, is refused, exit 3; as model input, a quantized
    tensor is refused."""
    torch.manual_seed(0)
    w = torch.quantize_per_channel(torch.randn(4, 6), torch.rand(4) + 0.1, torch.zeros(4, dtype=torch.long), 0,
                                   torch.qint8)
    a = torch.quantize_per_tensor(torch.randn(3), 0.5, 3, torch.quint8)
    path = os.path.join(work, "python.quantized.pt")
    torch.save({"w": w, "a": a, "b": torch.randn(2)}, path)
    listed = subprocess.run([exe, "inspect", "--json", path], capture_output=True, text=True, check=True)
    tensors = {t["name"]: t for t in json.loads(listed.stdout)["tensors"]}
    assert tensors["w"]["quantization"] == "int8 per_channel(axis=0) symmetric", tensors["w"]
    assert tensors["a"]["quantization"] == "uint8 per_tensor asymmetric", tensors["a"]
    assert tensors["b"]["dtype"] == "float32" and "quantization" not in tensors["b"], tensors["b"]

    edited = os.path.join(work, "python.quantized.edited.pt")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(edited, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                assert data.count(struct.pack(">d", 0.5)) == 1
                data = data.replace(struct.pack(">d", 0.5), struct.pack(">d", -0.5))
            dst.writestr(item, data)
    bad = subprocess.run([exe, "inspect", edited], capture_output=True, text=True)
    assert bad.returncode == 3 and "a quantized tensor's scale is not positive and finite" in bad.stderr, \
        (bad.returncode, bad.stderr)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(edited, "w") as dst:  # zero point 3 -> 1000
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = data.replace(struct.pack(">d", 0.5) + b"K\x03", struct.pack(">d", 0.5) + b"M\xe8\x03")
            dst.writestr(item, data)
    bad = subprocess.run([exe, "inspect", edited], capture_output=True, text=True)
    assert bad.returncode == 3 and "zero point is outside its integers' range" in bad.stderr, \
        (bad.returncode, bad.stderr)
    recipe = os.path.join(work, "quantized-input.yaml")
    with open(recipe, "w") as f:
        f.write(f"version: 1\nmodel: {{path: {path}}}\nquantizer: {{plugin: dynamic}}\n"
                f"format: {{plugin: safetensors, output: {work}/never.safetensors}}\n")
    bad = subprocess.run([exe, "run", recipe], capture_output=True, text=True)
    assert bad.returncode == 3 and "is quantized already ('w' is QInt8" in bad.stderr, (bad.returncode, bad.stderr)
    print("Python's quantized state dict: read without LibTorch's unpickler; edited scale and model input refused")


def check_crafted_views(exe, work):
    """Hand-made pickles whose tensor views or storages overflow 64 bits: refused by the
    reader's own checks, exit 3, before any tensor is made."""
    def longint(v):
        return b"\x8a\x08" + v.to_bytes(8, "little", signed=True)

    def archive(name, size, stride, numel, storage):
        pickle = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(("
                  b"X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu" +
                  longint(numel) + b"tQK\x00(" + b"".join(map(longint, size)) + b"t(" +
                  b"".join(map(longint, stride)) + b"t\x89ccollections\nOrderedDict\n)RtRs.")
        path = os.path.join(work, name)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle)
            z.writestr("archive/data/0", storage)
            z.writestr("archive/version", "3\n")
        return subprocess.run([exe, "inspect", path], capture_output=True, text=True)

    ok = archive("view.ok.pt", [2, 2], [2, 1], 4, bytes(16))
    assert ok.returncode == 0 and "[2,2]" in ok.stdout, (ok.returncode, ok.stdout, ok.stderr)
    for name, size, stride, numel, storage, message in (
            ("view.wraps.pt", [2**62 + 1], [4], 4, bytes(16), "tensor view runs past its storage"),
            ("view.overflows.pt", [2**62, 2], [4, 2**62], 4, bytes(16), "tensor view runs past its storage"),
            ("storage.overflows.pt", [2], [1], 2**62, b"", "storage '0' holds 0 bytes, not 4611686018427387904")):
        bad = archive(name, size, stride, numel, storage)
        assert bad.returncode == 3 and message in bad.stderr, (name, bad.returncode, bad.stderr)
    print("crafted state dicts: views and storages past 64 bits refused")


if __name__ == "__main__":
    main(*sys.argv[1:4])
