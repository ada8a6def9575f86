#!/usr/bin/env python3
"""Writes a safetensors checkpoint of fp32 Linear-like weights for the whole-run
benchmark, tensor by tensor (Python never holds the model); an OUT ending in .bin is
the same weights as a torch.save'd state dict (held whole while saved).
usage: make_checkpoint.py OUT GIB"""
import json
import struct
import sys

import torch

ROWS = COLS = 4096  # 64 MiB per weight


def main(out, gib):
    count = max(1, int(float(gib) * 1024 / 64))
    names = [f"layers.{i}.weight" for i in range(count)]
    header, offset = {}, 0
    for name in names:
        size = ROWS * COLS * 4
        header[name] = {"dtype": "F32", "shape": [ROWS, COLS], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    torch.manual_seed(0)
    if out.endswith(".bin"):
        torch.save({name: torch.randn(ROWS, COLS) * 0.02 for name in names}, out)
        return
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _ in names:
            f.write((torch.randn(ROWS, COLS) * 0.02).numpy().tobytes())


if __name__ == "__main__":
    main(*sys.argv[1:])
