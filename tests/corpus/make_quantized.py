#!/usr/bin/env python3
"""Writes tests/corpus/quantized: small compressed-tensors files as mq writes them (int8
per channel, uint4 asymmetric per group with packed zero points) and damaged copies,
for the fuzz_safetensors_quantized target. Run from anywhere; no dependencies."""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quantized")


def save(name, tensors, specs):
    """tensors: name -> (dtype, shape, bytes)."""
    header, data = {}, b""
    for key, (dtype, shape, raw) in tensors.items():
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {"mq.quantized": json.dumps(specs)}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def spec(dtype, granularity, scheme, group=8):
    return {"dtype": dtype, "granularity": granularity, "axis": 0, "group_size": group, "scheme": scheme,
            "reduce_range": False}


def i32(*values):
    return struct.pack(f"<{len(values)}i", *values)


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


os.makedirs(OUT, exist_ok=True)
int8 = {"w": ("I8", [4, 8], bytes(range(32))), "w_scale": ("F32", [4, 1], f32(0.1, 0.2, 0.3, 0.4))}
save("int8.bin", int8, {"w": spec("int8", "per_channel", "symmetric")})
# uint4 [4, 16] in groups of 8: two words a row, scales [4, 2], zero points packed along the rows.
uint4 = {"w_packed": ("I32", [4, 2], i32(*range(0x10101010, 0x10101018))), "w_shape": ("I32", [2], i32(4, 16)),
         "w_scale": ("F32", [4, 2], f32(*[0.5] * 8)), "w_zero_point": ("I32", [1, 2], i32(0x8888, 0x7777))}
uint4_spec = {"w": spec("uint4", "per_group", "asymmetric")}
save("uint4.bin", uint4, uint4_spec)
save("uint4-few-words.bin", dict(uint4, w_packed=("I32", [4, 1], i32(1, 2, 3, 4))), uint4_spec)
save("uint4-shape-negative.bin", dict(uint4, w_shape=("I32", [2], i32(-4, 16))), uint4_spec)
save("uint4-zero-points-short.bin", dict(uint4, w_zero_point=("I32", [1, 1], i32(0x8888))), uint4_spec)
save("uint4-zero-points-3d.bin", dict(uint4, w_zero_point=("I32", [1, 1, 2], i32(0x8888, 0x7777))), uint4_spec)
save("int8-float-data.bin", dict(int8, w=("F32", [4, 2], bytes(32))), {"w": spec("int8", "per_channel", "symmetric")})
save("int8-scales-short.bin", dict(int8, w_scale=("F32", [3, 1], f32(1, 2, 3))),
     {"w": spec("int8", "per_channel", "symmetric")})
