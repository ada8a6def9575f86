#!/usr/bin/env python3
"""GPTQ against round-to-nearest, judged by transformers (the oracle): a tiny random
Llama with a Llama 3 style tokenizer; mq quantizes it to int4 groups of 32 with the
gptq quantizer (calibrated from text) and with the dynamic one (round to nearest). Each
artifact's weights are dequantized here from the compressed-tensors layout
(pack_to_int32 nibbles, value + 8; one scale a group) and put into transformers' model.
On the calibration windows, transformers' own Linear inputs give each layer's output
error ||(W - W_hat) X^T||^2 / ||W X^T||^2: GPTQ's sum must be at most 0.7 of
round-to-nearest's (issue 28's target); on held-out text the output KL from the float
model must be smaller too. Sequential GPTQ (the default) is checked against one pass on
the float model (`sequential: false`) where they must agree and where they must differ,
and a one-thread run must give the same tensors as a two-thread one. `actorder: group`
(groups of columns in activation order) writes each Linear's weight_g_idx under a config
group saying so; its columns take their group's scale here as compressed-tensors'
dequantization does (scale[:, g_idx]). (compressed-tensors itself needs torch >= 2.1; the venv has
Debian's 1.13, and transformers 4.44 does not read its configs.)
usage: check_gptq.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

import check_llama
import check_tokenizer

SEQ = 64


def windows(tokenizer_file, text_file, count):
    with open(text_file, encoding="utf-8", newline="") as f:
        ids = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file)(f.read())["input_ids"]
    assert len(ids) >= count * SEQ, len(ids)
    return [torch.tensor([ids[i * SEQ:(i + 1) * SEQ]]) for i in range(count)]


def hessians_of(model, batches, keep):
    """H = sum of x^T x (float64) over `batches` of each nn.Linear's inputs in `model`,
    for the Linears whose names `keep` accepts, as transformers computes them."""
    hessians, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and keep(name):
            def record(module, inputs, output, name=name):
                x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
                hessians[name] = hessians.get(name, 0) + x.T @ x
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        for ids in batches:
            model(ids)
    for h in hooks:
        h.remove()
    return hessians


def quantize(exe, work, name, directory, calib, quantizer, options="", threads=2):
    out = os.path.join(work, name)
    recipe = os.path.join(work, name + ".yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{text: {{path: {calib}, samples: 16, seq_len: {SEQ}}}}}
quantizer: {{plugin: {quantizer}, options: {{dtype: int4, group_size: 32{options}}}}}
format: {{plugin: safetensors, output: {out}}}
validators: []
""")
    subprocess.run([exe, "run", "--quiet", "--threads", str(threads), recipe], check=True)
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    tensors = load_file(os.path.join(out, "model.safetensors"))
    layers = dict(model.named_modules())
    for name, module in layers.items():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            with torch.no_grad():
                module.weight.copy_(dequantize(tensors, name + ".weight"))
    return model


def dequantize(tensors, name):
    """compressed-tensors pack-quantized, symmetric int4: eight nibbles an int32, element
    0 lowest, value + 8; weight_scale [rows, groups]; column c in group weight_g_idx[c]
    where there is one, else c // group_size."""
    rows, cols = tensors[name + "_shape"].tolist()
    words = tensors[name + "_packed"].to(torch.int64) & 0xFFFFFFFF
    nibbles = torch.stack([(words >> (4 * k)) & 0xF for k in range(8)], dim=-1).reshape(rows, -1)[:, :cols] - 8
    scale = tensors[name + "_scale"].to(torch.float32)
    group = -(-cols // scale.shape[1])
    g_idx = tensors.get(name + "_g_idx", torch.arange(cols) // group).to(torch.int64)
    assert nibbles.min() >= -8 and nibbles.max() <= 7
    return nibbles.to(torch.float32) * scale[:, g_idx]


def main(exe, work):
    os.makedirs(work, exist_ok=True)
    lines = check_tokenizer.corpus(1200)
    calib, held_out = os.path.join(work, "calib.txt"), os.path.join(work, "held_out.txt")
    for path, part in ((calib, lines[:900]), (held_out, lines[900:])):
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    directory = os.path.join(work, "llama")
    tokenizer = check_tokenizer.build("llama3", calib, directory)
    torch.manual_seed(0)
    check_llama.save_random_model(
        LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    attn_implementation="eager"), directory, torch.float32)
    tokenizer_file = os.path.join(directory, "tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    gptq = quantize(exe, work, "gptq", directory, calib, "gptq", ", actorder: none")
    ordered = quantize(exe, work, "ordered", directory, calib, "gptq")  # actorder: weight, the default
    # The same bytes for any thread count (issue 28): every tensor of a one-thread run.
    quantize(exe, work, "ordered_one_thread", directory, calib, "gptq", threads=1)
    two, one = (load_file(os.path.join(work, d, "model.safetensors")) for d in ("ordered", "ordered_one_thread"))
    assert two.keys() == one.keys() and all(torch.equal(two[k], one[k]) for k in two), "--threads changed the output"
    one_pass = quantize(exe, work, "one_pass", directory, calib, "gptq", ", actorder: none, sequential: false")
    regrouped = quantize(exe, work, "regrouped", directory, calib, "gptq", ", actorder: group")
    rtn = quantize(exe, work, "rtn", directory, calib, "dynamic")

    def record_hessians(recorded):
        """Each Linear's Hessian on the calibration windows mq used."""
        hessians = hessians_of(recorded, windows(tokenizer_file, calib, 16), lambda name: name != "lm_head")
        assert len(hessians) == 14, hessians.keys()
        return hessians

    hessians = record_hessians(model)

    def output_error(quantized, hessians=hessians, prefix=""):
        layers = dict(quantized.named_modules())
        noise = signal = 0.0
        for name, h in hessians.items():
            if not name.startswith(prefix):
                continue
            w = dict(model.named_modules())[name].weight.double()
            w_hat = layers[name].weight.double()
            assert not torch.equal(w, w_hat), f"{name} was not quantized"
            d = w - w_hat
            noise += (d @ h * d).sum().item()
            signal += (w @ h * w).sum().item()
        return noise / signal

    def kl(quantized):
        total, count = 0.0, 0
        with torch.no_grad():
            for ids in windows(tokenizer_file, held_out, 6):
                p = torch.log_softmax(model(ids).logits.double(), -1)
                q = torch.log_softmax(quantized(ids).logits.double(), -1)
                total += (p.exp() * (p - q)).sum().item()
                count += ids.numel()
        return total / count

    # actorder: group: every quantized Linear has a g_idx that is not column order, and
    # the config group that targets it says actorder "group" (else loaders ignore g_idx).
    with open(os.path.join(work, "regrouped", "config.json"), encoding="utf-8") as f:
        groups = json.load(f)["quantization_config"]["config_groups"]
    assert [g["weights"]["actorder"] for g in groups.values()] == ["group"], groups
    tensors = load_file(os.path.join(work, "regrouped", "model.safetensors"))
    g_idx = {k: v for k, v in tensors.items() if k.endswith(".weight_g_idx")}
    assert len(g_idx) == 14 and all(v.dtype == torch.int32 for v in g_idx.values()), g_idx.keys()
    assert not all(torch.equal(v, torch.arange(v.numel()) // 32) for v in g_idx.values())

    e_gptq, e_rtn, e_ordered, e_regrouped = (output_error(m) for m in (gptq, rtn, ordered, regrouped))
    kl_gptq, kl_rtn, kl_ordered, kl_regrouped = (kl(m) for m in (gptq, rtn, ordered, regrouped))
    print(f"int4 g32, 14 Linears: layer output error GPTQ {e_gptq:.5f}, in activation order {e_ordered:.5f}, "
          f"with its groups {e_regrouped:.5f}, RTN {e_rtn:.5f} (ratios {e_gptq / e_rtn:.2f}, "
          f"{e_ordered / e_rtn:.2f}, {e_regrouped / e_rtn:.2f}); held-out KL GPTQ {kl_gptq:.5f}, "
          f"in activation order {kl_ordered:.5f}, with its groups {kl_regrouped:.5f}, RTN {kl_rtn:.5f}")
    for e, k in ((e_gptq, kl_gptq), (e_ordered, kl_ordered), (e_regrouped, kl_regrouped)):
        assert e <= 0.7 * e_rtn, (e, e_rtn)
        assert k < kl_rtn, (k, kl_rtn)

    # Sequential (the default) against one pass on the float model: block 0 sees the same
    # inputs either way, so the same weights; block 1's Hessians are those of the model
    # whose block 0 is quantized, and on them (recomputed here, in a model with mq's block 0)
    # the sequential artifact's block 1 moves its outputs less than the one-pass one's.
    gptq_layers, one_pass_layers = dict(gptq.named_modules()), dict(one_pass.named_modules())
    for name, h in hessians.items():
        same = torch.equal(gptq_layers[name].weight, one_pass_layers[name].weight)
        assert same == name.startswith("model.layers.0."), name
    block0_quantized = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                            attn_implementation="eager").eval()
    block0_quantized.model.layers[0].load_state_dict(gptq.model.layers[0].state_dict())
    after_block0 = record_hessians(block0_quantized)
    e_seq = output_error(gptq, after_block0, "model.layers.1.")
    e_one = output_error(one_pass, after_block0, "model.layers.1.")
    print(f"block 1 on the inputs of a quantized block 0: sequential {e_seq:.5f} vs one pass {e_one:.5f}")
    assert e_seq < e_one, (e_seq, e_one)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
