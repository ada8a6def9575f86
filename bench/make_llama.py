#!/usr/bin/env python3
"""Writes a synthetic Hugging Face Llama directory of random bf16 weights (config.json,
model.safetensors, tensor by tensor: Python never holds the model) of about GIB gibibytes:
hidden 2048, intermediate 5632, 16 heads (4 KV heads), vocab 32000, tied embeddings,
as many blocks as fit (at least 16 when GIB allows: a block is 88 MiB).
usage: make_llama.py OUT_DIR GIB"""
import json
import os
import struct
import sys

import torch

HIDDEN, INNER, HEADS, KV_HEADS, VOCAB = 2048, 5632, 16, 4, 32000


def block_shapes(i):
    p, head = f"model.layers.{i}.", HIDDEN // HEADS
    return [(p + "input_layernorm.weight", [HIDDEN]), (p + "post_attention_layernorm.weight", [HIDDEN]),
            (p + "self_attn.q_proj.weight", [HIDDEN, HIDDEN]), (p + "self_attn.k_proj.weight", [KV_HEADS * head, HIDDEN]),
            (p + "self_attn.v_proj.weight", [KV_HEADS * head, HIDDEN]), (p + "self_attn.o_proj.weight", [HIDDEN, HIDDEN]),
            (p + "mlp.gate_proj.weight", [INNER, HIDDEN]), (p + "mlp.up_proj.weight", [INNER, HIDDEN]),
            (p + "mlp.down_proj.weight", [HIDDEN, INNER])]


def main(out, gib):
    os.makedirs(out, exist_ok=True)
    per_block = sum(torch.Size(s).numel() for _, s in block_shapes(0)) * 2
    blocks = max(1, int((float(gib) * 2**30 - VOCAB * HIDDEN * 2) // per_block))
    shapes = [("model.embed_tokens.weight", [VOCAB, HIDDEN]), ("model.norm.weight", [HIDDEN])]
    for i in range(blocks):
        shapes += block_shapes(i)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        size = torch.Size(shape).numel() * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    torch.manual_seed(0)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, shape in shapes:
            t = (1 + 0.1 * torch.randn(shape)) if name.endswith("norm.weight") else torch.randn(shape) * 0.02
            f.write(t.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": INNER, "num_hidden_layers": blocks, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 4096,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    print(f"{out}: {blocks} blocks, {offset / 2**30:.2f} GiB of bf16 weights ({per_block / 2**20:.0f} MiB a block)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
