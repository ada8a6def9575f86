#!/usr/bin/env python3
"""Writes mlp.safetensors, the example model: a 64-128-64 MLP with a norm, in float32.

Standard library only, deterministic (seeded), so it runs on any machine:
    python3 configs/models/make_mlp.py configs/models/mlp.safetensors
"""
import json
import random
import struct
import sys


def tensor(rng, shape, std):
    n = 1
    for d in shape:
        n *= d
    return shape, [rng.gauss(0.0, std) for _ in range(n)]


def main(path):
    rng = random.Random(0)
    tensors = {
        "fc1.weight": tensor(rng, [128, 64], 0.125),
        "fc1.bias": tensor(rng, [128], 0.01),
        "fc2.weight": tensor(rng, [64, 128], 0.088),
        "fc2.bias": tensor(rng, [64], 0.01),
        "norm.weight": ([64], [1.0] * 64),
    }
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


if __name__ == "__main__":
    main(sys.argv[1])
