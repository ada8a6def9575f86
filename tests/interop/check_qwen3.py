#!/usr/bin/env python3
"""Qwen3 (an RMSNorm over each head of q and k before rope, an explicit head_dim, tied
embeddings) judged by llama.cpp: transformers 4.44, the newest on Debian's torch 1.13,
has no Qwen3, so llama.cpp's own implementation is the oracle here. A tiny random Qwen3
directory (tensors and config.json as Qwen3ForCausalLM saves them, a Qwen2-style
tokenizer) is written by mq-pipeline to an F32 GGUF; llama.cpp's logits for a token
sequence from that file must equal mq's runtime's (forward_tool, the llama architecture
plugin) within 1e-3 relative, so mq's runtime and its GGUF writer (names, q/k norms,
keys) both read Qwen3 as llama.cpp does. Q8_0: bytes equal llama_model_quantize's, and
logits within 30 dB of mq's. Static W8A8 calibration runs on it from the CLI.
usage: check_qwen3.py MQ_PIPELINE FORWARD_TOOL WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_gguf  # noqa: E402  (llama.cpp with plain buffers)
import check_tokenizer  # noqa: E402

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INNER, LAYERS = 64, 4, 2, 32, 128, 2


def save_qwen3(directory, vocab, bos, eos):
    torch.manual_seed(0)
    weight = lambda *shape: torch.randn(*shape) * 0.2
    norm = lambda n: 1 + 0.3 * torch.randn(n)
    tensors = {"model.embed_tokens.weight": weight(vocab, HIDDEN), "model.norm.weight": norm(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": norm(HIDDEN), p + "post_attention_layernorm.weight": norm(HIDDEN),
            p + "self_attn.q_proj.weight": weight(HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": weight(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": weight(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": weight(HIDDEN, HEADS * HEAD_DIM),
            p + "self_attn.q_norm.weight": norm(HEAD_DIM), p + "self_attn.k_norm.weight": norm(HEAD_DIM),
            p + "mlp.gate_proj.weight": weight(INNER, HIDDEN), p + "mlp.up_proj.weight": weight(INNER, HIDDEN),
            p + "mlp.down_proj.weight": weight(HIDDEN, INNER)})
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": HIDDEN,
              "intermediate_size": INNER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "max_position_embeddings": 128,
              "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True, "vocab_size": vocab,
              "bos_token_id": bos, "eos_token_id": eos, "attention_bias": False, "hidden_act": "silu",
              "use_sliding_window": False, "sliding_window": None, "torch_dtype": "float32"}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)


def mq_logits(tool, directory, work):
    out = os.path.join(work, "mq-logits.f32")
    result = subprocess.run([tool, directory, out, *map(str, check_gguf.TOKENS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows, cols = map(int, result.stdout.split())
    return np.fromfile(out, dtype=np.float32).reshape(rows, cols)


def main(exe, tool, work):
    os.makedirs(work, exist_ok=True)
    lines = check_tokenizer.corpus(300)
    corpus_file = os.path.join(work, "corpus.txt")
    with open(corpus_file, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    directory = os.path.join(work, "qwen3")
    tok = check_tokenizer.build("qwen2", corpus_file, directory)
    save_qwen3(directory, tok.get_vocab_size() + 5, tok.token_to_id("<|begin_of_text|>"),
               tok.token_to_id("<|end_of_text|>"))

    ours = mq_logits(tool, directory, work)
    f32 = check_gguf.run_mq(exe, work, directory, "qwen3", "f32")
    theirs = check_gguf.llama_cpp_logits(f32)
    relative = np.abs(theirs - ours).max() / np.abs(ours).max()
    assert relative < 1e-3, f"qwen3: llama.cpp's logits from mq's GGUF differ from mq's runtime by {relative:.3g} relative"
    print(f"qwen3: llama.cpp's F32 logits equal mq's runtime's ({relative:.2g} relative)")

    q8 = check_gguf.run_mq(exe, work, directory, "qwen3", "q8_0")
    compared = check_gguf.same_bytes_as_llama_cpp(work, "qwen3", f32, q8, "q8_0")
    assert compared == 7 * LAYERS, compared
    db = check_gguf.sqnr_db(ours, check_gguf.llama_cpp_logits(q8))
    assert db >= 30, f"qwen3: q8_0 logits SQNR {db:.1f} dB < 30"
    print(f"qwen3: q8_0: the {compared} Linear weights' bytes equal llama_model_quantize's; logits {db:.1f} dB")

    recipe = os.path.join(work, "static.yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{text: {{path: {corpus_file}, samples: 4, seq_len: 32}}}}
quantizer: {{plugin: static, options: {{dtype: int8}}}}
format: {{plugin: safetensors, output: {os.path.join(work, "qwen3-w8a8")}}}
validators: [{{plugin: logits, options: {{max_kl: 0.05}}}}]
""")
    result = subprocess.run([exe, "run", recipe, "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    print("qwen3: static W8A8 calibrated from text and gated by the logits validator")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
