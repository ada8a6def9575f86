#!/usr/bin/env bash
# Hugging Face directory -> GGUF, mq against llama.cpp on the same machine in one run:
# a synthetic Llama checkpoint (bf16, hidden 2048, MLP 5632, LAYERS blocks, vocab 32000:
# 1.07 GB at 9 blocks) with a Llama 3 style tokenizer. mq: the whole process, bf16
# safetensors in, q8_0 / q4_0 / Q4_K_M (the gguf-q4_k_m preset's recipe) GGUF out. llama.cpp: only its quantize step
# (llama_model_quantize, from llama-cpp-python) on the F16 GGUF of the same model (mq
# writes it; convert_hf_to_gguf.py, the Python step before, is not counted), 2 threads
# as mq; both quantize every 2-D weight (llama.cpp gives the head Q6_K for q4_0). Best
# of 3 each, and each process's peak RSS. (That the bytes agree: interop_gguf.)
#   cmake --preset default && cmake --build --preset default && tests/make_venv.sh && bench/gguf.sh [LAYERS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${BUILD_DIR:-build}")
work=$(realpath -m "${WORK_DIR:-$build/bench-gguf}")
layers=${1:-9}
mkdir -p "$work"
.venv/bin/python - "$work" "$layers" "$build/bin/mq-pipeline" "$(pwd)/tests/interop" <<'PY'
import ctypes, json, os, resource, subprocess, sys, time
work, layers, exe, interop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, interop)
import torch
from safetensors.torch import save_file
model = os.path.join(work, f"llama-{layers}")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    import check_tokenizer
    os.makedirs(model, exist_ok=True)
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(check_tokenizer.corpus(2000)) + "\n")
    tok = check_tokenizer.build("llama3", corpus, model)
    h, ffn, vocab, kv = 2048, 5632, 32000, 512
    torch.manual_seed(0)
    w = lambda *shape: (torch.randn(*shape) * 0.02).to(torch.bfloat16)
    tensors = {"model.embed_tokens.weight": w(vocab, h), "model.norm.weight": torch.ones(h, dtype=torch.bfloat16),
               "lm_head.weight": w(vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                        p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                        p + "self_attn.q_proj.weight": w(h, h), p + "self_attn.k_proj.weight": w(kv, h),
                        p + "self_attn.v_proj.weight": w(kv, h), p + "self_attn.o_proj.weight": w(h, h),
                        p + "mlp.gate_proj.weight": w(ffn, h), p + "mlp.up_proj.weight": w(ffn, h),
                        p + "mlp.down_proj.weight": w(h, ffn)})
    save_file(tensors, os.path.join(model, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": h,
                   "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": 16,
                   "num_key_value_heads": 4, "vocab_size": vocab, "max_position_embeddings": 2048,
                   "rms_norm_eps": 1e-5, "bos_token_id": tok.token_to_id("<|begin_of_text|>"),
                   "eos_token_id": tok.token_to_id("<|end_of_text|>"), "torch_dtype": "bfloat16"}, f)
size = os.path.getsize(os.path.join(model, "model.safetensors"))

def mq(dtype, out, extra=""):
    recipe = os.path.join(work, f"{dtype}.yaml")
    if dtype == "q4_k_m":  # the preset's recipe (llama.cpp's mix), its output and validators replaced
        subprocess.run([exe, "init", model, "--preset", "gguf-q4_k_m", "-o", recipe, "--force"], check=True,
                       capture_output=True)
        with open(recipe) as f:
            text = f.read()
        text = text[:text.index("format:")] + f"format: {{plugin: gguf, output: {out}}}\nvalidators: []\n"
        with open(recipe, "w") as f:
            f.write(text)
    else:
        with open(recipe, "w") as f:
            f.write(f"version: 1\nmodel: {{path: {model}}}\nquantizer: {{plugin: dynamic, options: {{dtype: {dtype}{extra}}}}}\n"
                    f"format: {{plugin: gguf, output: {out}}}\nvalidators: []\n")
    start = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", exe, "run", recipe, "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - start, int(r.stderr.strip().splitlines()[-1]) / 2**20

def llama_cpp(src, out, ftype):
    code = f"""
import ctypes, resource, time, llama_cpp
p = llama_cpp.llama_model_quantize_default_params(); p.ftype = {ftype}; p.nthread = 2
start = time.perf_counter()
assert llama_cpp.llama_model_quantize({src!r}.encode(), {out!r}.encode(), ctypes.byref(p)) == 0
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    seconds, rss = map(float, r.stdout.split()[-2:])
    return seconds, rss

f16 = os.path.join(work, "model.f16.gguf")
mq("fp16", f16, ", layers: {types: [Linear, Embedding], replace: true}")
rows = []
for dtype, ftype in [("q8_0", 7), ("q4_0", 2), ("q4_k_m", 15)][int(os.environ.get("FIRST", "0")):]:
    ours = min(mq(dtype, os.path.join(work, f"mq.{dtype}.gguf"), ", layers: {types: [Linear, Embedding], replace: true}")
               for _ in range(3))
    theirs = min(llama_cpp(f16, os.path.join(work, f"llama-cpp.{dtype}.gguf"), ftype) for _ in range(3))
    rows.append({"type": dtype, "input_gb": size / 1e9, "mq_s": ours[0], "mq_rss_gib": ours[1],
                 "llama_cpp_quantize_s": theirs[0], "llama_cpp_rss_gib": theirs[1],
                 "mq_speedup": theirs[0] / ours[0]})
    print(json.dumps(rows[-1]))
PY
