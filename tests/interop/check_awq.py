#!/usr/bin/env python3
"""AWQ judged by transformers (the oracle): the outlier Llama of check_mixed.py quantized
to int4 groups of 128 by mq's awq quantizer and by round to nearest (dynamic), both
calibrated from text. transformers runs each artifact (every tensor from it: the scaled
norms included; Linear weights dequantized from the compressed-tensors layout):
AWQ's held-out KL from the float model must not exceed RTN's (issue 28's target), its
weight clipping search must lower it further, and mq's logits validator must report the
KL transformers computes within 1 %.

`rounding: gptq` (AWQ's scales, then GPTQ, block by block) must beat both AWQ alone and
GPTQ alone. Its numerics are checked where they are easy to get wrong: each block's
Linears solve against the Hessians of their inputs in the folded model, computed by the
runtime from the unfolded model with the blocks before already quantized. transformers
recomputes them (block 0 of the artifact, the float model after it; the scales s are the
ratio of the float norms to the artifact's) and the layer-output error
||(W s - W_hat) (X / s)^T||^2 / ||W X^T||^2 of q/k/v/gate (behind a norm) and o_proj must
equal what mq's plan reports within 2 % (it prints three digits); block 1's inputs come
through block 0's up and down projections, whose own scales the artifact does not show.
usage: check_awq.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import os
import re
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import check_gptq
import check_mixed


def run(exe, work, name, directory, calib, held_out, quantizer, options=""):
    out, report = os.path.join(work, name), os.path.join(work, name + ".json")
    recipe = os.path.join(work, name + ".yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{text: {{path: {calib}, samples: 16, seq_len: 64}}}}
evaluation: {{text: {{path: {held_out}, samples: 6, seq_len: 64}}}}
quantizer: {{plugin: {quantizer}, options: {{dtype: int4, group_size: 128{options}}}}}
format: {{plugin: safetensors, output: {out}}}
validators: [{{plugin: logits}}]
report: {report}
""")
    subprocess.run([exe, "run", "--quiet", recipe], check=True)
    with open(report) as f:
        return out, json.load(f)


def check_reported_errors(directory, calib, out, report, block):
    """mq's reported GPTQ layer-output errors of `block` against transformers'."""
    reported = {}
    for row in report["layers"]:
        found = re.search(r"GPTQ: layer-output error ([0-9.e+-]+)", row["rule"])
        if found and row["tensor"].startswith(f"model.layers.{block}."):
            reported[row["tensor"][:-len(".weight")]] = float(found.group(1))
    artifact, _, _ = check_mixed.load(directory, out)
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    for earlier in range(block):  # quantized as the artifact has them (folded: the same function)
        model.model.layers[earlier].load_state_dict(artifact.model.layers[earlier].state_dict())
    prefix = f"model.layers.{block}."
    batches = check_gptq.windows(os.path.join(directory, "tokenizer.json"), calib, 16)
    hessians = check_gptq.hessians_of(model, batches, lambda name: name.startswith(prefix))
    tensors = load_file(os.path.join(out, "model.safetensors"))
    float_layers, layers = dict(model.named_modules()), dict(artifact.named_modules())
    norms = {"self_attn": "input_layernorm", "mlp": "post_attention_layernorm"}
    checked = 0
    for name, h in hessians.items():
        part, proj = name[len(prefix):].split(".")
        if proj in ("up_proj", "down_proj"):
            continue  # down's scales are folded into up's rows: not recoverable from the artifact
        w = float_layers[name].weight.double()
        w_hat = layers[name].weight.double()
        if proj != "o_proj":
            norm = f"{prefix}{norms[part]}.weight"
            s = float_layers[f"{prefix}{norms[part]}"].weight.double() / tensors[norm].double()
            w_hat = w_hat / s  # what the quantized weight does to the float model's inputs
        d = w - w_hat
        theirs = (d @ h * d).sum().item() / (w @ h * w).sum().item()
        ours = reported[name]
        print(f"{name}: layer-output error transformers {theirs:.5g}, mq {ours:.5g}")
        assert abs(ours - theirs) <= 0.02 * theirs, (name, ours, theirs)
        checked += 1
    assert checked == 5, checked


def main(exe, work):
    directory, calib, held_out, model = check_mixed.outlier_llama(work)
    kls = {}
    for name, quantizer, options in (("dynamic", "dynamic", ""), ("awq", "awq", ""),
                                     ("awq_unclipped", "awq", ", clip: false"), ("gptq", "gptq", ""),
                                     ("awq_gptq", "awq", ", rounding: gptq")):
        out, report = run(exe, work, name, directory, calib, held_out, quantizer, options)
        ours = report["validators"][0]["metrics"]["kl_mean"]
        if name == "awq_gptq":
            for block in (0, 1):
                check_reported_errors(directory, calib, out, report, block)
        quantized, _, _ = check_mixed.load(directory, out)
        theirs = check_mixed.held_out_kl(model, quantized, directory, held_out)
        print(f"{name}: held-out KL transformers {theirs:.6f}, mq's logits validator {ours:.6f}")
        assert abs(ours - theirs) <= 0.01 * theirs, (name, ours, theirs)
        kls[name] = theirs
    print(f"AWQ int4 g128: {kls['awq'] / kls['dynamic']:.3f}x round to nearest's KL "
          f"({kls['awq_unclipped'] / kls['dynamic']:.3f}x without the clipping search)")
    print(f"AWQ then GPTQ: {kls['awq_gptq'] / kls['dynamic']:.3f}x round to nearest's KL "
          f"(GPTQ alone {kls['gptq'] / kls['dynamic']:.3f}x)")
    assert kls["awq"] <= kls["dynamic"], kls
    assert kls["awq"] < kls["awq_unclipped"], kls
    assert kls["awq_gptq"] < min(kls["awq"], kls["gptq"]), kls


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
