#!/usr/bin/env bash
# Forward throughput (prefill, float32), mq's runtime against transformers' eager code on
# the same ~110M-parameter Llama (hidden 768, 12 blocks, 12 heads, vocab 32,000, tied
# embeddings; random weights saved once with transformers), BATCH sequences of 512 random
# token ids, the same intra-op thread count, best of five after a warm-up each, mq run
# before and after transformers (this VM's speed drifts; the best of each is compared).
#   cmake --preset default && cmake --build --preset default && tests/make_venv.sh && bench/forward.sh [THREADS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
work=$(realpath -m "${WORK_DIR:-$build/bench-forward}")
threads=${1:-2}
batch=${2:-1}
mkdir -p "$work"
.venv/bin/python - "$work" "$threads" "$batch" "$build/bin/mq_forward_bench" <<'PY'
import json, os, subprocess, sys, time
import torch
from transformers import AutoModelForCausalLM, LlamaConfig
work, threads, batch, bench = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
directory = os.path.join(work, "llama-110m")
if not os.path.exists(os.path.join(directory, "config.json")):
    config = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.save_pretrained(directory, safe_serialization=True)
run_mq = lambda: json.loads(subprocess.run([bench, directory, str(batch), "512", str(threads), "5"],
                                          capture_output=True, text=True, check=True).stdout)["tokens_per_s"]
before = run_mq()
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32, attn_implementation="eager").eval()
params = sum(p.numel() for p in model.parameters())
torch.manual_seed(0)
ids = torch.randint(32000, (batch, 512))
best = 1e300
with torch.no_grad():
    model(ids)
    for _ in range(5):
        start = time.perf_counter()
        model(ids)
        best = min(best, time.perf_counter() - start)
ours = max(before, run_mq())
theirs = batch * 512 / best
print(f"{params / 1e6:.0f}M-parameter Llama, {batch}x512 tokens, {threads} threads: mq {ours:.0f} tokens/s, "
      f"transformers {theirs:.0f} tokens/s, ratio {ours / theirs:.2f}")
PY
