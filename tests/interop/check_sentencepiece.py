#!/usr/bin/env python3
"""mq's SentencePiece against SentencePiece itself (PyPI sentencepiece, the oracle).
Tokenizers of the shapes models ship are trained here with sentencepiece on the corpus of
check_tokenizer.py: unigram with the default nmt_nfkc rules and user-defined symbols, BPE
with byte fallback, unigram without normalization rules or whitespace handling, and one
with characters left unknown. A model directory holding only that tokenizer.model must
give, line by line, [bos] + what sentencepiece's encode gives (tokenizer_config.json's
add_bos_token/add_eos_token honoured), and on every code point of planes 0-2 and 14 for
the nmt_nfkc one. Then transformers converts the unigram model to a tokenizer.json
(T5's converter: tokenizers' Precompiled normalizer over the same rules, Metaspace,
Unigram) and mq must give tokenizers' ids for it. A tokenizer.model that is not one is
refused in one line, exit 3.
usage: check_sentencepiece.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import io
import json
import os
import shutil
import subprocess
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_tokenizer import code_points, corpus, refused, run  # noqa: E402

SHAPES = {
    "unigram": dict(model_type="unigram", vocab_size=600, user_defined_symbols=["<mask>", "def"]),
    "bpe-bytes": dict(model_type="bpe", vocab_size=500, byte_fallback=True, character_coverage=0.98),
    "unigram-raw": dict(model_type="unigram", vocab_size=500, normalization_rule_name="identity",
                        remove_extra_whitespaces=False, add_dummy_prefix=False, byte_fallback=True),
    "unigram-unknown": dict(model_type="unigram", vocab_size=400, character_coverage=0.98,
                            normalization_rule_name="nfkc_cf"),
}


def train(text_file, directory, options):
    os.makedirs(directory, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(input=text_file, model_writer=model, minloglevel=2, hard_vocab_limit=False,
                                   **options)
    with open(os.path.join(directory, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def tokenize_lines(exe, directory, lines):
    path = os.path.join(directory, "lines.txt")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")
    result = run(exe, "--model", directory, path, "--lines", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def check(what, ours, theirs, lines):
    assert len(ours) == len(theirs), (what, len(ours), len(theirs))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"{what} line {i + 1} {lines[i]!r}:\n ours   {a}\n theirs {b}"


def main(exe, work):
    shutil.rmtree(work, ignore_errors=True)  # a tokenizer_config.json of a run before would change the ids
    os.makedirs(work)
    lines = corpus(3000)
    text_file = os.path.join(work, "corpus.txt")
    with open(text_file, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")
    for name, options in SHAPES.items():
        directory = os.path.join(work, name)
        sp = train(text_file, directory, options)
        check(name, tokenize_lines(exe, directory, lines), [[sp.bos_id()] + sp.encode(line) for line in lines], lines)
        if name == "unigram":  # every character through the nmt_nfkc rules
            points = code_points()
            check(name + " code points", tokenize_lines(exe, directory, points),
                  [[sp.bos_id()] + sp.encode(p) for p in points], points)
        print(f"{name}: {len(lines)} lines as sentencepiece encodes them")

    directory = os.path.join(work, "bpe-bytes")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(directory, "tokenizer.model"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": False, "add_eos_token": True,
                   "eos_token": "</s>"}, f)
    check("add_eos_token", tokenize_lines(exe, directory, lines[:50]),
          [sp.encode(line) + [sp.eos_id()] for line in lines[:50]], lines)
    print("tokenizer_config.json: add_bos_token false, add_eos_token true")

    # transformers' conversion of the unigram model: tokenizers' Precompiled normalizer.
    from tokenizers import Tokenizer
    from transformers import T5Tokenizer
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer
    slow = T5Tokenizer(os.path.join(work, "unigram", "tokenizer.model"), extra_ids=0, legacy=False)
    converted = os.path.join(work, "unigram-json")
    os.makedirs(converted, exist_ok=True)
    convert_slow_tokenizer(slow).save(os.path.join(converted, "tokenizer.json"))
    tok = Tokenizer.from_file(os.path.join(converted, "tokenizer.json"))
    assert "Precompiled" in tok.to_str(), "the conversion has no Precompiled normalizer"
    check("unigram tokenizer.json", tokenize_lines(exe, converted, lines), [e.ids for e in tok.encode_batch(lines)],
          lines)
    points = code_points()
    check("unigram tokenizer.json code points", tokenize_lines(exe, converted, points),
          [e.ids for e in tok.encode_batch(points)], points)
    print(f"unigram tokenizer.json (converted by transformers): {len(lines)} lines and every code point of "
          "planes 0-2 and 14 as tokenizers gives")

    bad = os.path.join(work, "bad")
    os.makedirs(bad, exist_ok=True)
    with open(os.path.join(bad, "tokenizer.model"), "wb") as f:
        f.write(b"\x0a\xff\xff\xff\xff\x0f")
    refused(run(exe, "--model", bad, text_file), "not a SentencePiece model")
    print("refusal: one line, exit 3")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
