#!/usr/bin/env python3
"""mq's block kernels against ggml's own (ggml_quantize_chunk from the libggml that
llama-cpp-python builds): the same float32 rows, every block type, the k-quants also
with importance weights (llama.cpp's imatrix path), must give the same bytes.
usage: check_blocks.py BLOCK_QUANTIZE_TOOL WORK_DIR (in the venv of tests/make_venv.sh)"""
import ctypes
import glob
import os
import subprocess
import sys

import numpy as np
import llama_cpp

GGML = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q4_k": 12, "q5_k": 13, "q6_k": 14}
BYTES = {"q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24, "q8_0": 34, "q4_k": 144, "q5_k": 176, "q6_k": 210}


def ggml():
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = ctypes.CDLL(glob.glob(os.path.join(lib_dir, "libggml-base.so*"))[0])
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def main(tool, work):
    os.makedirs(work, exist_ok=True)
    lib = ggml()
    rng = np.random.default_rng(0)
    rows, cols = 24, 1024
    # Rows of different scales, a few outliers, an all-zero row and block.
    x = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 3, (rows, 1))).astype(np.float32)
    x[3, 17] = 40.0
    x[5] = 0
    x[7, :256] = 0
    importance = (rng.gamma(0.5, 2.0, cols) + 1e-3).astype(np.float32)
    x.tofile(os.path.join(work, "x.f32"))
    importance.tofile(os.path.join(work, "importance.f32"))
    for name, kind in GGML.items():
        for weighted in ([False, True] if name != "q8_0" else [False]):
            out = os.path.join(work, f"{name}{'-imatrix' if weighted else ''}.bin")
            args = [tool, name, str(rows), str(cols), os.path.join(work, "x.f32"), out]
            subprocess.run(args + ([os.path.join(work, "importance.f32")] if weighted else []), check=True)
            ours = np.fromfile(out, dtype=np.uint8)
            lib.ggml_quantize_init(kind)
            theirs = np.zeros(rows * cols // (256 if name.endswith("_k") else 32) * BYTES[name], dtype=np.uint8)
            lib.ggml_quantize_chunk(kind, x.ctypes.data, theirs.ctypes.data, 0, rows, cols,
                                    importance.ctypes.data if weighted else None)
            blocks_ours, blocks_theirs = ours.reshape(-1, BYTES[name]), theirs.reshape(-1, BYTES[name])
            same = (blocks_ours == blocks_theirs).all(axis=1)
            assert same.all(), f"{name} (imatrix {weighted}): {np.count_nonzero(~same)} of {len(same)} blocks differ"
            if weighted:  # and the weights changed something: the test compares the weighted path
                plain = np.fromfile(os.path.join(work, f"{name}.bin"), dtype=np.uint8)
                assert not np.array_equal(plain, ours), name
            print(f"{name}{' with importance weights' if weighted else ''}: all {len(same)} blocks as ggml's")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
