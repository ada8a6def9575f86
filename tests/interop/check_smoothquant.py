#!/usr/bin/env python3
"""SmoothQuant (the static quantizer's smoothquant_alpha) judged by transformers (the
oracle): the outlier Llama of check_mixed.py, static W8A8 (int8 weights per channel,
int8 inputs per tensor) with and without smoothing, calibrated from text. transformers
runs each artifact as its kernels would: every tensor from the artifact (the smoothed
norms and up_proj included), Linear weights dequantized, and each quantized Linear's
input fake-quantized with the artifact's input_scale (torch.fake_quantize_per_tensor_affine).
Checked: the smoothed model's held-out KL from the float model is at most 0.5x plain
W8A8's (issue 28's target), and mq's own logits validator (which quantizes the inputs
the same way) reports the KL transformers computes within 1 %.
usage: check_smoothquant.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

import check_mixed


def run(exe, work, name, directory, calib, held_out, alpha):
    out, report = os.path.join(work, name), os.path.join(work, name + ".json")
    recipe = os.path.join(work, name + ".yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{text: {{path: {calib}, samples: 16, seq_len: 64}}}}
evaluation: {{text: {{path: {held_out}, samples: 6, seq_len: 64}}}}
quantizer: {{plugin: static, options: {{dtype: int8, smoothquant_alpha: {alpha}}}}}
format: {{plugin: safetensors, output: {out}}}
validators: [{{plugin: logits}}]
report: {report}
""")
    subprocess.run([exe, "run", "--quiet", recipe], check=True)
    with open(report) as f:
        return out, json.load(f)["validators"][0]["metrics"]["kl_mean"]


def load_w8a8(directory, out):
    """The artifact in transformers with each quantized Linear's input fake-quantized."""
    model, specs, _ = check_mixed.load(directory, out)
    tensors = load_file(os.path.join(out, "model.safetensors"))
    for name, module in model.named_modules():
        if specs.get(name) == "int8":
            scale = tensors[name + ".input_scale"].item()
            module.register_forward_pre_hook(
                lambda m, inputs, scale=scale: (torch.fake_quantize_per_tensor_affine(inputs[0], scale, 0, -128, 127),))
    return model


def main(exe, work):
    directory, calib, held_out, model = check_mixed.outlier_llama(work)
    results = {}
    for name, alpha in (("w8a8", 0), ("smoothquant", 0.5)):
        out, ours = run(exe, work, name, directory, calib, held_out, alpha)
        theirs = check_mixed.held_out_kl(model, load_w8a8(directory, out), directory, held_out)
        print(f"{name}: held-out KL transformers {theirs:.6f}, mq's logits validator {ours:.6f}")
        assert abs(ours - theirs) <= 0.01 * theirs, (name, ours, theirs)
        results[name] = theirs
    ratio = results["smoothquant"] / results["w8a8"]
    print(f"SmoothQuant (alpha 0.5) W8A8: {ratio:.2f}x plain W8A8's KL")
    assert ratio <= 0.5, results


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
