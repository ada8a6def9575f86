#!/usr/bin/env python3
"""PyTorch doing what bench/quantize_bench.cpp measures, on the same sizes: GB/s of fp32
input for torch.quantize_per_channel (with the per-channel min/max it needs) and the
min/max alone, and rows/s of HistogramObserver, at 1 and 2 threads. Prints JSON."""
import json
import os
import time

import torch

ROWS = int(os.environ.get("MQ_BENCH_ROWS", "16384"))
COLS = 8192


def best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    torch.manual_seed(0)
    w = torch.randn(ROWS, COLS)
    gb = w.numel() * 4 / 1e9
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)

        def per_channel():
            mn, mx = torch.aminmax(w, dim=1)
            scale = torch.maximum(-mn, mx) / 127.5
            torch.quantize_per_channel(w, scale.double(), torch.zeros(ROWS, dtype=torch.long), 0, torch.qint8)

        out[f"torch_quantize_per_channel_int8_{threads}t_GBps"] = gb / best(per_channel)
        out[f"torch_aminmax_per_channel_{threads}t_GBps"] = gb / best(lambda: torch.aminmax(w, dim=1))
        observer = torch.ao.quantization.HistogramObserver()
        batches = list(w.split(2048))  # taken in turn, as bench/quantize_bench.cpp does
        observer(batches[0])  # the first batch only sets the range
        seconds = best(lambda: [observer(b) for b in batches[1:]], repeat=2) / (len(batches) - 1)
        out[f"torch_histogram_observer_{threads}t_rows_per_s"] = 2048 / seconds
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
