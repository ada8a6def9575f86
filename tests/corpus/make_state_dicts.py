#!/usr/bin/env python3
"""Writes tests/corpus/state_dicts: small torch.save() archives (float, int and quantized
tensors per tensor and per channel, views, OrderedDict and plain dicts, lists, a metadata
string) in the fuzz_pt_state_dict target's input form: a u32 length and data.pkl, then
each storage ("0" to "3") as a u32 length and its bytes. Needs python3-torch."""
import collections
import io
import os
import struct
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "state_dicts")


def parts_of(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as z:
        prefix = z.namelist()[0].split("/")[0]
        parts = [z.read(f"{prefix}/data.pkl")]
        for i in range(4):
            if f"{prefix}/data/{i}" in z.namelist():
                parts.append(z.read(f"{prefix}/data/{i}"))
        assert f"{prefix}/data/4" not in z.namelist(), "a seed has at most four storages"
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    per_tensor = torch.quantize_per_tensor(w, 0.05, 0, torch.qint8)
    per_channel = torch.quantize_per_channel(w, torch.rand(8).double() / 10 + 0.01, torch.zeros(8, dtype=torch.long),
                                             0, torch.qint8)
    seeds = {
        "ordered-float": collections.OrderedDict([("fc.weight", w), ("fc.bias", torch.randn(8))]),
        "plain-dtypes": {"h": torch.randn(4, 4).half(), "b": torch.randn(4, 4).bfloat16(), "i": torch.arange(6),
                         "flag": torch.ones(3, dtype=torch.bool)},
        "quantized": {"q.weight": per_tensor, "c.weight": per_channel},
        "quint8": {"u": torch.quantize_per_tensor(torch.rand(4, 8), 0.01, 3, torch.quint8)},
        "views": {"t": w.t(), "row": w[2], "strided": w[:, ::3]},
        "list": [torch.randn(2, 8), torch.randn(3, 8)],
        "metadata": {"__metadata__": '{"mq.version": "0.1.0"}', "x": torch.randn(2)},
        "parameter": {"p": torch.nn.Parameter(torch.randn(4))},
    }
    for name, obj in seeds.items():
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(parts_of(obj))


if __name__ == "__main__":
    main()
