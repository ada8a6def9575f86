#!/usr/bin/env python3
"""AWQ judged by transformers (the oracle): the outlier Llama of check_mixed.py quantized
to int4 groups of 128 by mq's awq quantizer and by round to nearest (dynamic), both
calibrated from text. transformers runs each artifact (every tensor from it: the scaled
norms included; Linear weights dequantized from the compressed-tensors layout):
AWQ's held-out KL from the float model must not exceed RTN's (issue 28's target), its
weight clipping search must lower it further, and mq's logits validator must report the
KL transformers computes within 1 %.
usage: check_awq.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import os
import subprocess
import sys

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
        return out, json.load(f)["validators"][0]["metrics"]["kl_mean"]


def main(exe, work):
    directory, calib, held_out, model = check_mixed.outlier_llama(work)
    kls = {}
    for name, quantizer, options in (("dynamic", "dynamic", ""), ("awq", "awq", ""),
                                     ("awq_unclipped", "awq", ", clip: false")):
        out, ours = run(exe, work, name, directory, calib, held_out, quantizer, options)
        quantized, _, _ = check_mixed.load(directory, out)
        theirs = check_mixed.held_out_kl(model, quantized, directory, held_out)
        print(f"{name}: held-out KL transformers {theirs:.6f}, mq's logits validator {ours:.6f}")
        assert abs(ours - theirs) <= 0.01 * theirs, (name, ours, theirs)
        kls[name] = theirs
    print(f"AWQ int4 g128: {kls['awq'] / kls['dynamic']:.3f}x round to nearest's KL "
          f"({kls['awq_unclipped'] / kls['dynamic']:.3f}x without the clipping search)")
    assert kls["awq"] <= kls["dynamic"], kls
    assert kls["awq"] < kls["awq_unclipped"], kls


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
