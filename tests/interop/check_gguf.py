#!/usr/bin/env python3
"""mq's GGUF files judged by llama.cpp itself (llama-cpp-python) and gguf-py.
Tiny random Llama (GQA) and Qwen2 (q/k/v biases) directories with a Llama 3 or Qwen2
style BPE tokenizer.json, written by mq-pipeline to GGUF:
- F32: llama.cpp's logits on a token sequence equal transformers' within 1e-3 relative
  (so names, the Q/K row order, norms, rope and the keys are as llama.cpp reads them),
  Llama 3.1's rope scaling included (the rope_freqs tensor);
- q8_0, q4_0, q4_1, q5_0, q5_1: every tensor mq stores in the type llama.cpp's own
  llama_model_quantize gives it from mq's F32 file has the same bytes (the Linear
  weights: all of them); q8_0's logits reach 30 dB SQNR against transformers';
- q4_k, q5_k, q6_k (a Llama of hidden 256: rows of whole super-blocks): every weight's
  bytes equal llama_model_quantize's with `pure` (the type everywhere); the recipes of
  `mq-pipeline init --preset gguf-q4_k_m` (-q5_k_m, -q8_0) give every tensor the type
  and the bytes llama-quantize's Q4_K_M (Q5_K_M, Q8_0) does; q4_k weighted by the
  importance matrix of calibration text (quantizer imatrix) gives llama.cpp logits closer
  to transformers' on held-out text (KL) than plain q4_k;
- gguf-py reads every key and tensor: llama.cpp's keys, the tokenizer's tokens and
  merges as tokenizer.json has them, each tensor's shape and type;
- llama.cpp tokenizes text from the file's own tokenizer as tokenizers does;
- a Llama with a Llama 2 style SentencePiece tokenizer.model (BPE, byte fallback, trained
  here by sentencepiece): F32 logits as transformers', gguf-py reads its pieces, scores and
  types, and llama.cpp tokenizes text from the file as sentencepiece does; a unigram
  tokenizer.model is refused before any work (exit 2, one line).
usage: check_gguf.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import ctypes
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

import check_llama
import check_sentencepiece
import check_tokenizer

# llama.cpp's CPU backend repacks weights into "extra" buffers (AMX, ...) on CPUs that
# have them; its AMX kernels crash on models this small. Plain buffers compute the same.
import llama_cpp
import llama_cpp.llama_cpp as low

_model_defaults = low.llama_model_default_params


def _plain_buffers():
    params = _model_defaults()
    params.use_extra_bufts = False
    return params


low.llama_model_default_params = _plain_buffers

TYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9}  # LLAMA_FTYPE_MOSTLY_*
K_TYPES = {"q4_k": 14, "q5_k": 16, "q6_k": 18}  # _S: with `pure`, every weight in the type
TOKENS = [5, 100, 200, 300, 17, 42, 99, 500, 7, 64, 128, 256]


def run_mq(exe, work, directory, name, dtype, layers=""):
    out = os.path.join(work, f"{name}.{dtype}.gguf")
    layers = ", layers: {types: []}" if dtype == "f32" else layers
    recipe = os.path.join(work, f"{name}.{dtype}.yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
quantizer: {{plugin: dynamic, options: {{dtype: {"q8_0" if dtype == "f32" else dtype}{layers}}}}}
format: {{plugin: gguf, output: {out}}}
validators: [{{plugin: load_run}}]
""")
    result = subprocess.run([exe, "run", recipe, "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def llama_cpp_logits(path):
    # F32 KV cache: the default F16 one would round what transformers keeps in float32.
    llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=256, verbose=False, type_k=0, type_v=0)
    llm.eval(TOKENS)
    return np.array(llm.scores[:len(TOKENS)])


def sqnr_db(reference, got):
    return 10 * np.log10((reference ** 2).mean() / ((reference - got) ** 2).mean())


def same_bytes_as_llama_cpp(work, name, f32_path, ours_path, dtype, pure=False):
    """Quantizes mq's F32 file with llama.cpp; compares each tensor both store alike."""
    theirs_path = os.path.join(work, f"{name}.{dtype}.llama-cpp.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {**TYPES, **K_TYPES}[dtype]
    params.nthread = 1
    params.pure = pure
    assert llama_cpp.llama_model_quantize(f32_path.encode(), theirs_path.encode(), ctypes.byref(params)) == 0
    ours = {t.name: t for t in GGUFReader(ours_path).tensors}
    theirs = {t.name: t for t in GGUFReader(theirs_path).tensors}
    assert ours.keys() == theirs.keys(), (ours.keys() ^ theirs.keys())
    compared = 0
    for tensor_name, t in ours.items():
        u = theirs[tensor_name]
        if t.tensor_type != u.tensor_type:  # llama.cpp also quantizes the embedding and the head
            assert tensor_name in ("token_embd.weight", "output.weight"), (tensor_name, t.tensor_type, u.tensor_type)
            continue
        a, b = np.asarray(t.data).view(np.uint8), np.asarray(u.data).view(np.uint8)
        assert np.array_equal(a, b), f"{name} {dtype} {tensor_name}: bytes differ from llama.cpp's"
        compared += t.tensor_type.name.lower() == dtype
    return compared


def check_keys(path, config, tokenizer_dir, arch):
    reader = GGUFReader(path)
    value = lambda key: reader.fields[key].contents()
    assert value("general.architecture") == arch
    assert value(f"{arch}.block_count") == config.num_hidden_layers
    assert value(f"{arch}.embedding_length") == config.hidden_size
    assert value(f"{arch}.feed_forward_length") == config.intermediate_size
    assert value(f"{arch}.attention.head_count") == config.num_attention_heads
    assert value(f"{arch}.attention.head_count_kv") == config.num_key_value_heads
    assert abs(value(f"{arch}.attention.layer_norm_rms_epsilon") - config.rms_norm_eps) < 1e-9
    assert value(f"{arch}.rope.freq_base") == config.rope_theta
    with open(os.path.join(tokenizer_dir, "tokenizer.json")) as f:
        tokenizer = json.load(f)
    vocab = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    vocab.update({t["id"]: t["content"] for t in tokenizer["added_tokens"]})
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == config.vocab_size
    assert all(tokens[i] == t for i, t in vocab.items())
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    assert value("tokenizer.ggml.merges") == merges
    assert value("tokenizer.ggml.bos_token_id") == config.bos_token_id
    for t in reader.tensors:
        assert t.name.startswith(("blk.", "token_embd", "output", "rope_freqs")), t.name
    return len(reader.fields), len(reader.tensors)


def f32_against_transformers(exe, work, directory, name, config):
    """A random model of `config` saved in `directory` and mq's F32 GGUF of it, whose
    llama.cpp logits must equal transformers' within 1e-3 relative: (transformers'
    logits, the file, the relative difference)."""
    torch.manual_seed(0)
    # Weights of a trained model's scale: at check_llama's 0.5 a block's outputs grow so
    # large that llama.cpp's own q8_0 file reaches only 29.9 dB.
    check_llama.save_random_model(config, directory, torch.float32, std=0.2)
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        reference = model(torch.tensor([TOKENS])).logits[0].numpy()
    f32 = run_mq(exe, work, directory, name, "f32")
    relative = np.abs(llama_cpp_logits(f32) - reference).max() / np.abs(reference).max()
    assert relative < 1e-3, f"{name}: F32 logits differ from transformers' by {relative:.3g} relative"
    return reference, f32, relative


def check_case(exe, work, name, config_class, extra, tokenizer_kind, arch, corpus_file, lines, logits_only=False):
    directory = os.path.join(work, name)
    tok = check_tokenizer.build(tokenizer_kind, corpus_file, directory)
    config = config_class(vocab_size=tok.get_vocab_size() + 5, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, rms_norm_eps=1e-5, attn_implementation="eager",
                          bos_token_id=tok.token_to_id("<|begin_of_text|>"),
                          eos_token_id=tok.token_to_id("<|end_of_text|>"), **extra)
    reference, f32, relative = f32_against_transformers(exe, work, directory, name, config)
    keys, tensors = check_keys(f32, config, directory, arch)
    print(f"{name}: F32 logits as transformers' ({relative:.2g} relative); gguf-py reads {keys} keys, {tensors} tensors")
    if logits_only:
        return

    for dtype in TYPES:
        ours = run_mq(exe, work, directory, name, dtype)
        compared = same_bytes_as_llama_cpp(work, name, f32, ours, dtype)
        assert compared == 7 * config.num_hidden_layers, (name, dtype, compared)
        line = f"{name}: {dtype}: the {compared} Linear weights' bytes equal llama_model_quantize's"
        if dtype == "q8_0":
            db = sqnr_db(reference, llama_cpp_logits(ours))
            assert db >= 30, f"{name}: q8_0 logits SQNR {db:.1f} dB < 30"
            line += f"; logits {db:.1f} dB SQNR against transformers'"
        print(line)

    llm = llama_cpp.Llama(model_path=f32, vocab_only=True, verbose=False)
    for text in lines:
        theirs = tok.encode(text, add_special_tokens=False).ids
        ours = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert ours == theirs, f"{name}: llama.cpp tokenizes {text!r} as {ours}, tokenizers as {theirs}"
    print(f"{name}: llama.cpp tokenizes {len(lines)} lines from the file's tokenizer as tokenizers does")


def check_k_quants(exe, work, corpus_file):
    """k-quants need rows of 256: a Llama of hidden 256, every 2-D weight quantized, as
    llama.cpp quantizes with `pure` (no per-tensor mix)."""
    name, directory = "llama-256", os.path.join(work, "llama-256")
    tok = check_tokenizer.build("llama3", corpus_file, directory)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-5, attn_implementation="eager")
    torch.manual_seed(1)
    check_llama.save_random_model(config, directory, torch.float32, std=0.2)
    f32 = run_mq(exe, work, directory, name, "f32")
    for dtype in K_TYPES:
        ours = run_mq(exe, work, directory, name, dtype, ", layers: {types: [Linear, Embedding], replace: true}")
        compared = same_bytes_as_llama_cpp(work, name, f32, ours, dtype, pure=True)
        assert compared == 7 * config.num_hidden_layers + 2, (dtype, compared)
        print(f"{name}: {dtype}: all {compared} weights' bytes (embedding and head too) equal llama_model_quantize's")
    # The presets of llama.cpp's mixes, from `mq-pipeline init`: the same type for every
    # tensor as llama-quantize gives it, and the same bytes.
    for preset, ftype in [("gguf-q4_k_m", 15), ("gguf-q5_k_m", 17), ("gguf-q8_0", 7)]:
        recipe = os.path.join(work, f"{preset}.yaml")
        for command in (["init", directory, "--preset", preset, "-o", recipe, "--force"], ["run", recipe, "--quiet"]):
            result = subprocess.run([exe, *command], capture_output=True, text=True, cwd=work)
            assert result.returncode == 0, result.stderr
        ours = os.path.join(work, "out", f"{name}.{preset}.gguf")
        theirs = os.path.join(work, f"{name}.{preset}.llama-cpp.gguf")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = 1
        assert llama_cpp.llama_model_quantize(f32.encode(), theirs.encode(), ctypes.byref(params)) == 0
        theirs_tensors = {t.name: t for t in GGUFReader(theirs).tensors}
        types = {}
        for t in GGUFReader(ours).tensors:
            u = theirs_tensors[t.name]
            assert t.tensor_type == u.tensor_type, (preset, t.name, t.tensor_type.name, u.tensor_type.name)
            assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(u.data).view(np.uint8)), (preset, t.name)
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        print(f"{name}: preset {preset}: every tensor's type and bytes as llama-quantize's ({types})")
    check_imatrix(exe, work, name, directory, corpus_file)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def check_imatrix(exe, work, name, directory, corpus_file):
    """Importance-weighted q4_k (calibrated on the first half of the corpus) against plain
    q4_k: llama.cpp's logits on text from the other half are closer to transformers' (KL)."""
    with open(corpus_file, encoding="utf-8") as f:
        lines = f.read().split("\n")
    calibration, held_out = os.path.join(work, "calibration.txt"), " ".join(lines[len(lines) // 2:])
    with open(calibration, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:len(lines) // 2]) + "\n")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(directory, "tokenizer.json"))
    ids = tokenizer(held_out)["input_ids"][:200]
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        reference = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1).numpy()
    kl = {}
    for quantizer in ("dynamic", "imatrix"):
        out = os.path.join(work, f"{name}.{quantizer}.q4_k.gguf")
        recipe = os.path.join(work, f"{quantizer}.yaml")
        with open(recipe, "w") as f:
            f.write(f"""version: 1
model: {{path: {directory}}}
{"calibration: {text: {path: " + calibration + ", samples: 16, seq_len: 64}}" if quantizer == "imatrix" else ""}
quantizer: {{plugin: {quantizer}, options: {{dtype: q4_k, layers: {{types: [Linear, Embedding], replace: true}}}}}}
format: {{plugin: gguf, output: {out}}}
validators: []
""")
        result = subprocess.run([exe, "run", recipe, "--quiet"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        llm = llama_cpp.Llama(model_path=out, logits_all=True, n_ctx=256, verbose=False, type_k=0, type_v=0)
        llm.eval(ids)
        got = log_softmax(np.array(llm.scores[:len(ids)]))
        kl[quantizer] = float((np.exp(reference) * (reference - got)).sum(-1).mean())
    assert kl["imatrix"] < kl["dynamic"], kl
    print(f"{name}: q4_k with an importance matrix: held-out KL {kl['imatrix']:.4f} against {kl['dynamic']:.4f} without")


def check_sentencepiece_case(exe, work, corpus_file, lines):
    directory = os.path.join(work, "llama-spm")
    # No user-defined symbols: llama.cpp puts a "▁" after each (HF's legacy Llama tokenizer
    # does too), which sentencepiece does not.
    sp = check_sentencepiece.train(corpus_file, directory, dict(
        model_type="bpe", vocab_size=500, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, character_coverage=0.98))
    config = LlamaConfig(vocab_size=sp.vocab_size() + 3, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                         bos_token_id=sp.bos_id(), eos_token_id=sp.eos_id())
    _, f32, relative = f32_against_transformers(exe, work, directory, "llama-spm", config)

    reader = GGUFReader(f32)
    value = lambda key: reader.fields[key].contents()
    assert value("tokenizer.ggml.model") == "llama"
    pieces = [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert value("tokenizer.ggml.tokens")[:len(pieces)] == pieces
    assert len(value("tokenizer.ggml.tokens")) == config.vocab_size
    assert np.allclose(value("tokenizer.ggml.scores")[:len(pieces)], [sp.get_score(i) for i in range(len(pieces))])
    types = value("tokenizer.ggml.token_type")
    assert types[sp.unk_id()] == 2 and types[sp.bos_id()] == 3 and types[sp.piece_to_id("<0x41>")] == 6, types[:8]

    llm = llama_cpp.Llama(model_path=f32, vocab_only=True, verbose=False)
    for text in lines:
        ours = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert ours == sp.encode(text), f"llama-spm: llama.cpp tokenizes {text!r} as {ours}, sentencepiece as {sp.encode(text)}"
    print(f"llama-spm: F32 logits as transformers' ({relative:.2g} relative); llama.cpp tokenizes {len(lines)} lines "
          "from the file's SentencePiece vocabulary as sentencepiece does")

    unigram = os.path.join(work, "llama-unigram")
    shutil.rmtree(unigram, ignore_errors=True)
    shutil.copytree(directory, unigram)
    check_sentencepiece.train(corpus_file, unigram, dict(model_type="unigram", vocab_size=500))
    out = os.path.join(work, "unigram.gguf")
    result = subprocess.run([exe, "run", "--quiet", os.path.join(work, "llama-spm.f32.yaml"), "--set",
                             f"model.path={unigram}", "--set", f"format.output={out}"], capture_output=True, text=True)
    err = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in err and "a unigram SentencePiece model is not written" in err, err
    assert not os.path.exists(out)
    print("llama-unigram: a unigram tokenizer.model is refused in one line, exit 2, nothing written")


def main(exe, work):
    os.makedirs(work, exist_ok=True)
    lines = check_tokenizer.corpus(300)
    corpus_file = os.path.join(work, "corpus.txt")
    with open(corpus_file, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    check_case(exe, work, "llama", LlamaConfig, {}, "llama3", "llama", corpus_file, lines)
    check_case(exe, work, "qwen2", Qwen2Config, {}, "qwen2", "qwen2", corpus_file, lines)
    # Llama 3.1's rope scaling: llama.cpp reads it from the rope_freqs tensor mq makes.
    llama3_rope = {"rope_theta": 50000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}
    check_case(exe, work, "llama-rope-llama3", LlamaConfig, llama3_rope, "llama3", "llama", corpus_file, lines,
               logits_only=True)
    check_k_quants(exe, work, corpus_file)
    check_sentencepiece_case(exe, work, corpus_file, lines)
    print("ok: llama.cpp runs mq's GGUF files as transformers runs the checkpoints")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
