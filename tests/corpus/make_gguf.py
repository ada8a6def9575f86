#!/usr/bin/env python3
"""Writes tests/corpus/gguf: small GGUF files as mq writes them (llama keys, an F32 norm,
a Q8_0 and a Q4_1 weight with their mq.specs, Q/K rows under the llama architecture) and
damaged copies, for the fuzz_gguf target. Run from anywhere; no dependencies."""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf")
U32, F32, STRING, ARRAY = 4, 6, 8, 9


def string(s):
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv(key, kind, value):
    if kind == U32:
        body = struct.pack("<I", value)
    elif kind == F32:
        body = struct.pack("<f", value)
    elif kind == STRING:
        body = string(value)
    else:  # an array of strings
        body = struct.pack("<IQ", STRING, len(value)) + b"".join(string(v) for v in value)
    return string(key) + struct.pack("<I", kind) + body


def spec(dtype, scheme):
    return {"dtype": dtype, "granularity": "per_group", "axis": 0, "group_size": 32, "scheme": scheme,
            "reduce_range": False}


def gguf(keys, tensors):
    """tensors: (name, shape outermost first, ggml type, bytes)."""
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(keys)) + b"".join(keys)
    data = b""
    for name, shape, kind, raw in tensors:
        header += string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in reversed(shape))
        header += struct.pack("<IQ", kind, len(data))
        data += raw + b"\0" * (-len(raw) % 32)
    return header + b"\0" * (-len(header) % 32) + data


def q8_0_block(values):
    d = max(abs(v) for v in values) / 127
    return struct.pack("<e", d) + bytes((round(v / d) & 0xFF) if d else 0 for v in values)


def main():
    os.makedirs(OUT, exist_ok=True)
    keys = [kv("general.architecture", STRING, "llama"), kv("general.alignment", U32, 32),
            kv("llama.attention.head_count", U32, 2), kv("llama.attention.head_count_kv", U32, 1),
            kv("tokenizer.ggml.tokens", ARRAY, ["a", "b"]), kv("mq.mode", STRING, "dynamic"),
            kv("mq.specs", STRING, json.dumps({"model.layers.0.self_attn.q_proj.weight": spec("q8_0", "symmetric"),
                                               "model.layers.0.mlp.up_proj.weight": spec("q4_1", "asymmetric")}))]
    rows = [q8_0_block([(r * 32 + j) / 100 - 5 for j in range(32)]) for r in range(4)]
    q4_1 = (struct.pack("<ee", 0.5, -1.0) + bytes(range(16))) * 2
    tensors = [("blk.0.attn_norm.weight", [4], 0, struct.pack("<4f", 1, 2, 3, 4)),
               ("blk.0.attn_q.weight", [4, 32], 8, b"".join(rows)),
               ("blk.0.ffn_up.weight", [2, 32], 3, q4_1)]
    good = gguf(keys, tensors)
    files = {
        "good.gguf": good,
        "truncated.gguf": good[:len(good) // 2],
        "spec-says-q4_0.gguf": good.replace(b'"q8_0"', b'"q4_0"'),
        "heads-do-not-divide.gguf": gguf(keys[:2] + [kv("llama.attention.head_count", U32, 3)] + keys[3:], tensors),
        "unknown-type.gguf": gguf(keys, tensors[:2] + [("blk.0.ffn_up.weight", [2, 32], 10, q4_1)]),
        "huge-array.gguf": gguf(keys[:4] + [string("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, 1 << 62)],
                                tensors),
    }
    for name, raw in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(raw)


if __name__ == "__main__":
    main()
