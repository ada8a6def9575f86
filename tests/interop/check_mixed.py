#!/usr/bin/env python3
"""Mixed precision to a size, judged by transformers (the oracle): a tiny random Llama
with outlier channels injected the way real LLMs have them (a few hidden channels
scaled up by the norms in front of some Linears). The hand-made baseline is uniform int4
groups of 128 with int8 for every down_proj (what people pick for the sensitive
layers); mq's `target: {max_bytes: <the baseline's bytes>}` chooses among int4 g128,
int4 g32, int8 and bf16 per Linear from calibration text. Each artifact's
quantization_config is resolved here, layer by layer, as compressed-tensors does (exact
names in ignore, then config group targets), its weights dequantized from the
compressed-tensors layout and put into transformers' model. Checked: the mixed
artifact's tensors take no more bytes than the target, and its held-out output KL from
the float model is at most 0.7x the baseline's (issue 29's target); a second target
reuses the cached sensitivity table. The weight-error estimate (no model runs) is
reported beside it and must beat uniform int4 g128.
(compressed-tensors itself needs torch >= 2.1; the venv has Debian's 1.13.)
usage: check_mixed.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig

import check_gptq
import check_llama
import check_tokenizer

SEQ = 64


def run(exe, work, name, directory, calib, quantizer_options, extra=""):
    out = os.path.join(work, name)
    recipe = os.path.join(work, name + ".yaml")
    report = os.path.join(work, name + ".json")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{text: {{path: {calib}, samples: 16, seq_len: {SEQ}}}}}
quantizer: {{plugin: dynamic, options: {quantizer_options}}}
{extra}
format: {{plugin: safetensors, output: {out}}}
validators: [{{plugin: conformance}}]
report: {report}
""")
    subprocess.run([exe, "run", "--quiet", recipe], check=True)
    with open(report) as f:
        return out, json.load(f)


def resolve(config, layer):
    """The weights' arguments compressed-tensors gives `layer`: None when ignored or untargeted."""
    q = config.get("quantization_config")
    if q is None or layer in q["ignore"]:
        return None
    found = [g for g in q["config_groups"].values() if layer in g["targets"]]
    assert len(found) <= 1, (layer, found)
    return found[0]["weights"] if found else None


def load(directory, out, model_class=AutoModelForCausalLM):
    """`directory`'s model in transformers with every Linear but lm_head as `out` stores it:
    the model, each Linear's scheme, the artifact's tensor bytes."""
    model = model_class.from_pretrained(directory, torch_dtype=torch.float32, attn_implementation="eager").eval()
    tensors = load_file(os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    specs = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name == "lm_head":
            continue
        weights = resolve(config, name)
        if weights is None:
            w = tensors[name + ".weight"].to(torch.float32)
            specs[name] = "float"
        elif weights["num_bits"] == 4:
            w = check_gptq.dequantize(tensors, name + ".weight")
            specs[name] = f"int4 g{weights['group_size']}"
        else:
            assert weights["num_bits"] == 8 and weights["strategy"] == "channel", weights
            w = tensors[name + ".weight"].to(torch.float32) * tensors[name + ".weight_scale"].to(torch.float32)
            specs[name] = "int8"
        with torch.no_grad():
            module.weight.copy_(w)
    # Everything else as the artifact holds it (norms a transform such as SmoothQuant changed).
    with torch.no_grad():
        for name, value in model.state_dict().items():
            layer = name.rsplit(".", 1)[0]
            if layer not in specs and name in tensors and tensors[name].is_floating_point():
                value.copy_(tensors[name].to(value.dtype))
    return model, specs, sum(t.numel() * t.element_size() for t in tensors.values())


def outlier_llama(work):
    """A tiny random Llama with outlier channels (norm weights 30x on a few channels in
    front of some Linears) and a Llama 3 style tokenizer, in WORK/llama; calibration and
    held-out text beside it. Returns the directory, the two text files, the float model."""
    os.makedirs(work, exist_ok=True)
    lines = check_tokenizer.corpus(1200)
    calib, held_out = os.path.join(work, "calib.txt"), os.path.join(work, "held_out.txt")
    for path, part in ((calib, lines[:900]), (held_out, lines[900:])):
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    directory = os.path.join(work, "llama")
    tokenizer = check_tokenizer.build("llama3", calib, directory)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, attn_implementation="eager")
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1 if p.dim() > 1 else 0.2)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        # Outlier channels: a few hidden channels 30x larger in front of some Linears.
        model.model.layers[0].post_attention_layernorm.weight[[3, 77]] = 30.0
        model.model.layers[1].input_layernorm.weight[[10, 200]] = 30.0
    model.save_pretrained(directory, safe_serialization=True)
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    return directory, calib, held_out, model


def held_out_kl(model, quantized, directory, held_out):
    """Mean per-token KL of `quantized`'s next-token distribution from `model`'s, on six
    64-token windows of the held-out text."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in check_gptq.windows(os.path.join(directory, "tokenizer.json"), held_out, 6):
            p = torch.log_softmax(model(ids).logits.double(), -1)
            q = torch.log_softmax(quantized(ids).logits.double(), -1)
            total += (p.exp() * (p - q)).sum().item()
            count += ids.numel()
    return total / count


def main(exe, work):
    directory, calib, held_out, model = outlier_llama(work)
    config = model.config

    def kl(quantized):
        return held_out_kl(model, quantized, directory, held_out)

    base_out, base_report = run(exe, work, "baseline", directory, calib,
                                "{dtype: int4, group_size: 128, overrides: {'*.down_proj': {dtype: int8}}}")
    budget = base_report["size"]["quantized_bytes"]
    mixed_out, mixed_report = run(exe, work, "mixed", directory, calib, "{dtype: int4, group_size: 128}",
                                  f"target: {{max_bytes: {budget}, sensitivity: output}}")
    cheap_out, cheap_report = run(exe, work, "mixed-weight", directory, calib, "{dtype: int4, group_size: 128}",
                                  f"target: {{max_bytes: {budget}}}")
    uniform_out, _ = run(exe, work, "uniform", directory, calib, "{dtype: int4, group_size: 128}")
    baseline, base_specs, base_bytes = load(directory, base_out)
    mixed, mixed_specs, mixed_bytes = load(directory, mixed_out)
    uniform, _, uniform_bytes = load(directory, uniform_out)
    cheap, _, _ = load(directory, cheap_out)
    kl_base, kl_mixed, kl_uniform, kl_cheap = kl(baseline), kl(mixed), kl(uniform), kl(cheap)
    print(f"baseline (int4 g128, int8 down_proj): {base_bytes} tensor bytes, KL {kl_base:.5f}; "
          f"uniform int4 g128: {uniform_bytes} bytes, KL {kl_uniform:.5f}")
    print(f"mixed to max_bytes {budget}: {mixed_bytes} tensor bytes, KL {kl_mixed:.5f} "
          f"({kl_mixed / kl_base:.2f}x the baseline's)")
    print("  " + mixed_report["target"])
    print(f"  with the weight sensitivity instead: KL {kl_cheap:.5f} ({kl_cheap / kl_base:.2f}x); "
          + cheap_report["target"])
    for name, spec in mixed_specs.items():
        print(f"  {name}: {spec}")
    assert mixed_report["size"]["quantized_bytes"] <= budget and mixed_bytes <= budget + 8 * len(mixed_specs), \
        (mixed_report["size"]["quantized_bytes"], mixed_bytes, budget)
    assert mixed_bytes == mixed_report["size"]["quantized_bytes"] or abs(mixed_bytes - mixed_report["size"]["quantized_bytes"]) < 64
    assert kl_mixed <= 0.7 * kl_base, (kl_mixed, kl_base)
    # The cheap estimate (no extra forward passes) is coarser, but still beats uniform int4.
    assert kl_cheap < kl_uniform, (kl_cheap, kl_uniform)
    # q/k/v and gate/up share a spec (vLLM loads each as one layer).
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        assert len({mixed_specs[p + "self_attn." + x] for x in ("q_proj", "k_proj", "v_proj")}) == 1
        assert mixed_specs[p + "mlp.gate_proj"] == mixed_specs[p + "mlp.up_proj"]

    # Another target re-plans from the cached table.
    _, again = run(exe, work, "mixed", directory, calib, "{dtype: int4, group_size: 128}",
                   "target: {bits_per_weight: 6, sensitivity: output}")
    assert "read from mixed.sensitivity.json" in again["target"], again["target"]
    print("  second target: " + again["target"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
