#!/usr/bin/env python3
"""The llama architecture plugin against transformers (the oracle): tiny random
Llama, Mistral and Qwen2 checkpoints (GQA, tied embeddings, q/k/v and MLP biases,
llama3, linear and yarn rope scaling, bfloat16 weights) saved with save_pretrained; mq
calibrates a static W8A8 recipe on them by running them, and every Linear's
input_scale it writes equals what transformers' own forward gives (hooks on each
nn.Linear, absmax / 127.5) within 1e-4 relative, lm_head's included (so the final norm
too); and the same from text, tokenized with the directory's tokenizer.json.
usage: check_llama.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, PreTrainedTokenizerFast, Qwen2Config

import check_tokenizer

COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=64, rms_norm_eps=1e-5)
CASES = {
    "llama-gqa-llama3": (LlamaConfig, dict(num_key_value_heads=2, rope_theta=50000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}), torch.float32),
    "llama-tied-biases-linear": (LlamaConfig, dict(num_key_value_heads=4, tie_word_embeddings=True,
                                                   attention_bias=True, mlp_bias=True,
                                                   rope_scaling={"rope_type": "linear", "factor": 2.0}), torch.float32),
    "llama-bf16": (LlamaConfig, dict(num_key_value_heads=1), torch.bfloat16),
    "mistral": (MistralConfig, dict(num_key_value_heads=2, sliding_window=32), torch.float32),
    "qwen2": (Qwen2Config, dict(num_key_value_heads=2), torch.float32),
    # Llama: transformers 4.44's Qwen2 ignores rope_scaling (later versions apply it).
    "llama-yarn": (LlamaConfig, dict(num_key_value_heads=2, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "beta_fast": 16, "original_max_position_embeddings": 64}), torch.float32),
}


def save_random_model(config, directory, dtype, std=0.5):
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # weights far from zero, so that small errors would show
        for p in model.parameters():
            p.normal_(0, std if p.dim() > 1 else 0.3)
    model.to(dtype).save_pretrained(directory, safe_serialization=True)
    return config


def check_scales(exe, work, name, directory, config, batches, calibration):
    """mq's static W8A8 input scales for `directory`, calibrated as `calibration` (YAML)
    says, against transformers' forward over `batches`."""
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    absmax = {}

    def hook(layer):
        def record(module, inputs, output):
            absmax[layer] = max(absmax.get(layer, 0.0), inputs[0].abs().max().item())
        return record

    for layer, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(hook(layer))
    with torch.no_grad():
        for ids in batches:
            model(ids)
    out = os.path.join(work, name + "-w8a8")
    recipe = os.path.join(work, name + ".yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {calibration}
observer: {{plugin: minmax}}
quantizer: {{plugin: static, options: {{dtype: int8, layers: {{replace: true}}}}}}
format: {{plugin: safetensors, output: {out}}}
validators: []
""")
    subprocess.run([exe, "run", "--quiet", recipe], check=True)
    scales = load_file(os.path.join(out, "model.safetensors"))
    assert len(absmax) == 7 * COMMON["num_hidden_layers"] + 1, absmax.keys()
    if config.tie_word_embeddings:  # the checkpoint has no lm_head: the embedding is no layer to quantize
        assert "lm_head.input_scale" not in scales
        del absmax["lm_head"]
    worst = 0.0
    for layer, value in absmax.items():
        want = max(value / 127.5, torch.finfo(torch.float32).eps)
        got = scales[layer + ".input_scale"].item()
        worst = max(worst, abs(got - want) / want)
        assert abs(got - want) <= 1e-4 * want, (name, layer, got, want)
    print(f"{name}: {len(absmax)} Linear inputs as transformers computes them (worst {worst:.1e} relative)")


def main(exe, work):
    os.makedirs(work, exist_ok=True)
    torch.manual_seed(0)
    batches = [torch.randint(0, COMMON["vocab_size"], (2, 11)) for _ in range(3)]
    calibration = os.path.join(work, "ids.pt")
    torch.save(batches, calibration)
    for name, (config_class, extra, dtype) in CASES.items():
        directory = os.path.join(work, name)
        config = save_random_model(config_class(**COMMON, **extra, attn_implementation="eager"), directory, dtype)
        check_scales(exe, work, name, directory, config, batches, f"{{path: {calibration}}}")

    # Calibration from text: the model directory's tokenizer.json (a Llama 3 style BPE,
    # trained here) tokenizes the file, cut into windows as GPTQ's reference does; the
    # windows transformers' tokenizer makes give the same scales.
    corpus_file = os.path.join(work, "corpus.txt")
    with open(corpus_file, "w", encoding="utf-8") as f:
        f.write("\n".join(check_tokenizer.corpus(300)) + "\n")
    directory = os.path.join(work, "llama-text")
    tokenizer = check_tokenizer.build("llama3", corpus_file, directory)
    config = save_random_model(LlamaConfig(**dict(COMMON, vocab_size=tokenizer.get_vocab_size()), num_key_value_heads=2,
                                           attn_implementation="eager"), directory, torch.float32)
    with open(corpus_file, encoding="utf-8", newline="") as f:
        ids = PreTrainedTokenizerFast(tokenizer_file=os.path.join(directory, "tokenizer.json"))(f.read())["input_ids"]
    windows = [torch.tensor([ids[i * 24:(i + 1) * 24]]) for i in range(3)]
    check_scales(exe, work, "llama-text", directory, config, windows,
                 f"{{text: {{path: {corpus_file}, samples: 3, seq_len: 24}}}}")
    print("ok: the llama architecture runs Llama, Mistral and Qwen2 checkpoints as transformers does")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
