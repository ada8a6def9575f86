#!/usr/bin/env python3
"""Interop: what mq-pipeline writes is a valid safetensors file in the compressed-tensors
layout, read here by a small reader written from the spec (json + struct only).

usage: check_safetensors.py MQ_PIPELINE SOURCE_DIR WORK_DIR
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys

BITS = {"F32": 32, "F16": 16, "BF16": 16, "I8": 8, "U8": 8, "I32": 32, "I64": 64,
        "U16": 16, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4}
CODES = {"F32": "f", "I8": "b", "U8": "B", "I32": "i"}  # others are read as their bytes


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) >= 8, "shorter than the length field"
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0, "header not padded to 8 bytes"
    assert 8 + n <= len(data), "header runs past the file"
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    assert all(isinstance(v, str) for v in meta.values()), "metadata values must be strings"
    buffer = data[8 + n :]
    expected = 0
    tensors = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, end = info["data_offsets"]
        assert begin == expected and end >= begin, f"{name}: offsets not contiguous"
        count = math.prod(info["shape"])
        assert count * BITS[info["dtype"]] == 8 * (end - begin), f"{name}: size mismatch"
        expected = end
        code = CODES.get(info["dtype"])
        data = struct.unpack(f"<{count}{code}", buffer[begin:end]) if code else buffer[begin:end]
        tensors[name] = (info["dtype"], info["shape"], data)
    assert expected == len(buffer), "trailing bytes or truncated buffer"
    return tensors, meta


def sqnr_db(x, y):
    signal = sum(v * v for v in x)
    noise = sum((a - b) ** 2 for a, b in zip(x, y))
    return math.inf if noise < 1e-10 else 10 * math.log10(signal / noise)


def run(exe, recipe, out, *sets):
    args = [exe, "run", recipe, "--quiet", "--set", f"format.output={out}", "--set", "report=null",
            "--set", "html_report=null"]
    for s in sets:
        args += ["--set", s]
    subprocess.run(args, check=True)


def unpack_int4(words, rows, cols):
    """compressed-tensors pack_to_int32: eight nibbles a word, element 0 lowest, value + 8."""
    per_row = (cols + 7) // 8
    out = []
    for r in range(rows):
        for c in range(cols):
            word = words[r * per_row + c // 8] & 0xFFFFFFFF
            out.append(((word >> (4 * (c % 8))) & 0xF) - 8)
    return out


def check_int4(exe, source, work, original):
    out = os.path.join(work, "mlp.int4.safetensors")
    run(exe, os.path.join(source, "configs", "example-dynamic-int8.yaml"), out,
        "quantizer.options.dtype=int4", "quantizer.options.granularity=per_group",
        "quantizer.options.group_size=32",
        "validators=[]")
    quantized, meta = read_safetensors(out)
    group = json.loads(meta["quantization_config"])["config_groups"]["group_0"]
    assert group["format"] == "pack-quantized" and group["weights"]["group_size"] == 32, group
    assert group["input_activations"] is None, "int4 is weight-only"
    for name in ("fc1.weight", "fc2.weight"):
        _, pshape, packed = quantized[name + "_packed"]
        _, _, shape = quantized[name + "_shape"]
        _, sshape, scale = quantized[name + "_scale"]
        rows, cols = shape
        assert pshape == [rows, (cols + 7) // 8] and sshape == [rows, cols // 32], (pshape, sshape)
        q = unpack_int4(packed, rows, cols)
        assert min(q) >= -8 and max(q) <= 7
        x_hat = [q[i] * scale[(i // cols) * (cols // 32) + (i % cols) // 32] for i in range(len(q))]
        db = sqnr_db(original[name][2], x_hat)
        print(f"{name} int4 g32: SQNR {db:.1f} dB")
        assert db > 15, f"{name}: SQNR {db:.1f} dB"


def check_large(exe, source, work):
    """A source of 24 MiB: the output's header is written in place, padded with spaces."""
    import torch  # only to make the input; the output is read by read_safetensors
    torch.manual_seed(3)
    weight = torch.randn(6144, 1024)
    path = os.path.join(work, "large.safetensors")
    header = json.dumps({"fc.weight": {"dtype": "F32", "shape": [6144, 1024],
                                       "data_offsets": [0, weight.numel() * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + weight.numpy().tobytes())
    out = os.path.join(work, "large.int8.safetensors")
    run(exe, os.path.join(source, "configs", "example-dynamic-int8.yaml"), out,
        f"model.path={path}", "validators=[]")
    with open(out, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        text = f.read(n).decode("utf-8")
    assert len(text) - len(text.rstrip(" ")) > 1024, "expected the header's reserved room"
    quantized, _ = read_safetensors(out)
    _, shape, q = quantized["fc.weight"]
    _, _, scale = quantized["fc.weight_scale"]
    x_hat = torch.tensor(q, dtype=torch.float32).reshape(shape) * torch.tensor(scale).reshape(-1, 1)
    db = 10 * math.log10(weight.square().sum() / (weight - x_hat).square().sum())
    print(f"large fc.weight (header in place): SQNR {db:.1f} dB")
    assert db > 35, f"large: SQNR {db:.1f} dB"


def check_foreign(exe, source, work):
    """Tensors of dtypes LibTorch lacks (U16, FP8, FP4) come out as they went in."""
    import torch  # only to make the weight
    torch.manual_seed(4)
    parts = [("fc.weight", "F32", [32, 64], torch.randn(32, 64).numpy().tobytes()),
             ("ids", "U16", [3], bytes(range(6))), ("codes", "F4", [2, 3], b"\x01\x2f\xa3"),
             ("norm.weight", "F8_E4M3", [4], b"\x38\x40\xb8\x00"), ("e8", "F8_E8M0", [2], b"\x7f\x80")]
    header, data = {}, b""
    for name, dtype, shape, raw in parts:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = os.path.join(work, "foreign.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    out = os.path.join(work, "foreign.int8.safetensors")
    run(exe, os.path.join(source, "configs", "example-dynamic-int8.yaml"), out, f"model.path={path}")
    quantized, _ = read_safetensors(out)
    assert quantized["fc.weight"][0] == "I8", quantized["fc.weight"]
    for name, dtype, shape, raw in parts[1:]:
        assert quantized[name] == (dtype, shape, raw), (name, quantized[name])
    print("U16, F4, F8_E4M3 and F8_E8M0 tensors passed through")


def main(exe, source, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    out = os.path.join(work, "mlp.int8.safetensors")
    run(exe, os.path.join(source, "configs", "example-dynamic-int8.yaml"), out)

    original, _ = read_safetensors(os.path.join(source, "configs", "models", "mlp.safetensors"))
    quantized, meta = read_safetensors(out)
    assert meta["format"] == "pt", meta
    config = json.loads(meta["quantization_config"])
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    weights = config["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == 8 and weights["strategy"] == "channel" and weights["symmetric"]

    for name in ("fc1.weight", "fc2.weight"):
        dtype, shape, q = quantized[name]
        sdtype, sshape, scale = quantized[name + "_scale"]
        assert dtype == "I8" and sdtype == "F32" and sshape == [shape[0], 1], (dtype, sdtype, sshape)
        assert name + "_zero_point" not in quantized, "symmetric int8 has no zero point"
        cols = shape[1]
        x_hat = [q[i] * scale[i // cols] for i in range(len(q))]
        db = sqnr_db(original[name][2], x_hat)
        print(f"{name}: SQNR {db:.1f} dB")
        assert db > 35, f"{name}: SQNR {db:.1f} dB"
    for name in ("fc1.bias", "fc2.bias", "norm.weight"):
        assert quantized[name][2] == original[name][2], f"{name} not copied bit-exactly"
    check_int4(exe, source, work, original)
    check_large(exe, source, work)
    check_foreign(exe, source, work)
    print("ok: compressed-tensors int8 and int4 files checked by an independent reader")


if __name__ == "__main__":
    main(*sys.argv[1:4])
