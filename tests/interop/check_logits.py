#!/usr/bin/env python3
"""The logits validator's figures against transformers (the oracle): a tiny random Llama
quantized to int4 groups of 32 by mq, validated with `logits` on calibration token ids
written here; transformers loads the artifact's weights (dequantized from the
compressed-tensors layout after resolving each layer's scheme from config.json) and
computes, on the same ids, the per-token KL divergence from the float model (mean and
p99), top-1 agreement, logits SQNR and both perplexities. mq's must equal them within
1 % (issue 26); top-1 within one token.
usage: check_logits.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import math
import os
import subprocess
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig

import check_llama
import check_mixed


def main(exe, work):
    os.makedirs(work, exist_ok=True)
    directory = os.path.join(work, "llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         attn_implementation="eager")
    check_llama.save_random_model(config, directory, torch.float32, std=0.15)
    batches = [torch.randint(0, 300, (2, 24)) for _ in range(3)]
    calibration = os.path.join(work, "ids.safetensors")
    save_file({f"b{i}": b for i, b in enumerate(batches)}, calibration)
    out, report_file = os.path.join(work, "int4"), os.path.join(work, "int4.json")
    recipe = os.path.join(work, "int4.yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{path: {calibration}}}
quantizer: {{plugin: dynamic, options: {{dtype: int4, group_size: 32}}}}
format: {{plugin: safetensors, output: {out}}}
validators: [{{plugin: logits}}]
report: {report_file}
""")
    subprocess.run([exe, "run", "--quiet", recipe], check=True)
    with open(report_file) as f:
        ours = json.load(f)["validators"][0]["metrics"]

    original = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                    attn_implementation="eager").eval()
    written, _, _ = check_mixed.load(directory, out)
    kls, agree, tokens, signal, noise, nll0, nll1, predicted = [], 0, 0, 0.0, 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for ids in batches:
            a, b = original(ids).logits.double(), written(ids).logits.double()
            signal += a.pow(2).sum().item()
            noise += (b - a).pow(2).sum().item()
            p, q = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
            kls += (p.exp() * (p - q)).sum(-1).clamp_min(0).flatten().tolist()
            agree += (p.argmax(-1) == q.argmax(-1)).sum().item()
            tokens += ids.numel()
            nxt = ids[:, 1:].unsqueeze(-1)
            nll0 -= p[:, :-1].gather(-1, nxt).sum().item()
            nll1 -= q[:, :-1].gather(-1, nxt).sum().item()
            predicted += nxt.numel()
    kls.sort()
    theirs = {"kl_mean": sum(kls) / len(kls), "kl_p99": kls[math.ceil(0.99 * len(kls)) - 1],
              "logits_sqnr_db": 10 * math.log10(signal / noise),
              "perplexity_original": math.exp(nll0 / predicted), "perplexity_written": math.exp(nll1 / predicted)}
    for key, want in theirs.items():
        got = ours[key]
        print(f"{key}: mq {got:.6g}, transformers {want:.6g}")
        assert abs(got - want) <= 0.01 * abs(want), (key, got, want)
    assert abs(ours["top1_agreement"] * tokens - agree) <= 1, (ours["top1_agreement"], agree / tokens)
    assert ours["tokens"] == tokens
    print(f"ok: the logits validator's KL, p99, SQNR, top-1 and perplexities are transformers' on {tokens} tokens")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
