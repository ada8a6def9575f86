#!/usr/bin/env python3
"""GPTQ side by side: mq's gptq quantizer against llm-compressor's GPTQModifier on the same
Llama checkpoint, the same calibration token ids and the same scheme (W4A16: int4
symmetric, groups of 128, columns in activation order: ACTORDER=weight (static, the
default) or group, lm_head kept), each as a
whole process on this machine's threads. The judge is transformers with compressed-tensors,
which loads both artifacts (decompressing them) and the float model: mean per-token KL
of each quantized model's next-token distribution from the float one on held-out ids.

The checkpoint is a random float32 Llama with outlier channels (a few norm weights 20x,
in front of the attention and the MLP of every block), as real LLMs have them.

usage (in the venv bench/llmcompressor.sh makes): llmcompressor_gptq.py MQ_PIPELINE WORK_DIR
       LAYERS HIDDEN SAMPLES SEQ"""
import json
import os
import subprocess
import sys
import time

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig

VOCAB = 8000
LLMC = """
import sys, torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier
directory, ids_file, out, seq, actorder = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ids = torch.load(ids_file)
dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32)
oneshot(model=model, dataset=dataset, recipe=GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"], actorder=actorder),
        max_seq_length=seq, num_calibration_samples=ids.shape[0])
model.save_pretrained(out, save_compressed=True)
"""


def make_model(directory, layers, hidden):
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=(hidden * 11 // 4 + 127) // 128 * 128,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=max(1, hidden // 256), max_position_embeddings=4096,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
        for i, layer in enumerate(model.model.layers):
            channels = torch.randperm(hidden)[:4]
            layer.input_layernorm.weight[channels] = 20.0
            layer.post_attention_layernorm.weight[torch.randperm(hidden)[:4]] = 20.0
    model.save_pretrained(directory, safe_serialization=True)
    # A word-level tokenizer over the vocabulary: llm-compressor wants one in the directory.
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast
    words = Tokenizer(WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0").save_pretrained(directory)


def timed(command, cwd):
    """Wall seconds and peak RSS (GiB) of a process run in `cwd` (llm-compressor writes its
    logs there)."""
    start = time.monotonic()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", "/tmp/llmc_bench_rss"] + command, check=True,
                   stdout=subprocess.DEVNULL, cwd=cwd)
    seconds = time.monotonic() - start
    with open("/tmp/llmc_bench_rss") as f:
        return seconds, int(f.read().split()[-1]) / 2**20


def held_out_kl(reference, directory, held_out):
    quantized = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in held_out:
            p = torch.log_softmax(reference(ids[None]).logits.double(), -1)
            q = torch.log_softmax(quantized(ids[None]).logits.double(), -1)
            total += (p.exp() * (p - q)).sum().item()
            count += ids.numel()
    return total / count


def main(exe, work, layers, hidden, samples, seq, actorder=os.environ.get("ACTORDER", "weight")):
    os.makedirs(work, exist_ok=True)
    directory = os.path.join(work, f"llama-{layers}x{hidden}")
    if not os.path.exists(os.path.join(directory, "config.json")):
        make_model(directory, layers, hidden)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(VOCAB, (samples, seq), generator=generator)
    held_out = torch.randint(VOCAB, (8, seq), generator=generator)
    ids_pt, ids_st = os.path.join(work, "ids.pt"), os.path.join(work, "ids.safetensors")
    torch.save(ids, ids_pt)
    save_file({f"batch{i:04d}": ids[i:i + 1].contiguous() for i in range(samples)}, ids_st)

    results = {}
    theirs = os.path.join(work, "llmcompressor")
    results["llmcompressor"] = timed([sys.executable, "-c", LLMC, directory, ids_pt, theirs, str(seq), actorder], work)
    ours = os.path.join(work, "mq")
    recipe = os.path.join(work, "mq.yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{path: {ids_st}}}
quantizer: {{plugin: gptq, options: {{dtype: int4, group_size: 128, actorder: {actorder}}}}}
format: {{plugin: safetensors, output: {ours}}}
validators: []
""")
    subprocess.run(["rm", "-rf", ours], check=True)
    results["mq"] = timed([exe, "run", "--quiet", recipe], work)

    reference = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()
    kl = {name: held_out_kl(reference, d, held_out) for name, d in (("llmcompressor", theirs), ("mq", ours))}
    summary = {name: {"seconds": round(results[name][0], 2), "peak_rss_gib": round(results[name][1], 2),
                      "held_out_kl": round(kl[name], 6)} for name in results}
    summary["mq_kl_over_theirs"] = round(kl["mq"] / kl["llmcompressor"], 3)
    summary["their_time_over_mq"] = round(results["llmcompressor"][0] / results["mq"][0], 2)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7]))
