#!/usr/bin/env python3
"""Parity cases for mq's observers, computed by torch.ao.quantization itself.

Writes OUT (a safetensors file, written here with json + struct): for case i its
batches "i.b<j>" (float32) and PyTorch's "i.scale" (float32) and "i.zero_point"
(int32); __metadata__["cases"] describes each case. tests/interop/observer_parity_test.cpp
feeds the same batches to mq's observer plugins and compares.

usage: observer_parity.py OUT
"""
import json
import os
import struct
import sys

import torch
from torch.ao.quantization import observer as obs

OBSERVERS = {
    ("minmax", False): obs.MinMaxObserver,
    ("minmax", True): obs.PerChannelMinMaxObserver,
    ("moving_average", False): obs.MovingAverageMinMaxObserver,
    ("moving_average", True): obs.MovingAveragePerChannelMinMaxObserver,
    ("histogram", False): obs.HistogramObserver,
}


def inputs(gen, kind, batches):
    shape = (6, 37)
    out = []
    for b in range(batches):
        if kind == "gauss":
            x = torch.randn(shape, generator=gen) * (1 + b)
        elif kind == "positive":
            x = torch.rand(shape, generator=gen) * 3 + 0.5
        elif kind == "negative":
            x = -torch.rand(shape, generator=gen) * 2 - 0.1
        elif kind == "constant":
            x = torch.full(shape, 0.75)
        elif kind == "zeros":
            x = torch.zeros(shape)
        elif kind == "huge":
            x = torch.randn(shape, generator=gen) * 1e6
        elif kind == "single":
            x = torch.randn((1, 1), generator=gen)
        elif kind == "integral_extremes":  # PyTorch 1.13's histc truncates the range to ints
            x = torch.randn(shape, generator=gen).clamp(-3.9, 4.9)
            x[0, 0], x[1, 1] = -4.0, 5.0
        out.append(x.contiguous())
    return out


def main(path):
    gen = torch.Generator().manual_seed(1234)
    tensors, cases = {}, []
    for (name, per_channel), cls in OBSERVERS.items():
        kinds = ["integral_extremes"] if name == "histogram" else \
            ["gauss", "positive", "negative", "constant", "zeros", "huge", "single"]
        for kind in kinds:
            for dtype in (torch.qint8, torch.quint8):
                for symmetric in (True, False):
                    for reduce_range in (False, True):
                        if dtype == torch.quint8 and symmetric and reduce_range:
                            continue  # PyTorch refuses it, and so does mq
                        for batches in (1, 3):
                            if per_channel:
                                qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
                                o = cls(ch_axis=0, dtype=dtype, qscheme=qscheme, reduce_range=reduce_range)
                            else:
                                qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
                                o = cls(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range)
                            xs = inputs(gen, kind, batches)
                            if name == "histogram" and batches > 1:
                                xs[1] = xs[0].flip(1).contiguous()  # inside the range seen
                                xs[2] = xs[0] * 2  # the range grows, to integers again
                            for x in xs:
                                o(x)
                            scale, zp = o.calculate_qparams()
                            i = len(cases)
                            for j, x in enumerate(xs):
                                tensors[f"{i}.b{j}"] = x
                            tensors[f"{i}.scale"] = scale.reshape(-1).float()
                            tensors[f"{i}.zero_point"] = zp.reshape(-1).to(torch.int32)
                            cases.append({"observer": name, "per_channel": per_channel, "data": kind,
                                          "dtype": "int8" if dtype == torch.qint8 else "uint8",
                                          "scheme": "symmetric" if symmetric else "asymmetric",
                                          "reduce_range": reduce_range, "batches": len(xs)})
    write(path, tensors, {"cases": json.dumps(cases)})
    print(f"{len(cases)} cases written to {path}")


def write(path, tensors, metadata):
    codes = {torch.float32: ("F32", "f"), torch.int32: ("I32", "i")}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        dtype, code = codes[t.dtype]
        blob = struct.pack(f"<{t.numel()}{code}", *t.reshape(-1).tolist())
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


if __name__ == "__main__":
    main(sys.argv[1])
