#!/usr/bin/env python3
"""Builds small tokenizer.json files in the shapes of the supported model families with Hugging
Face `tokenizers` (trained on generated pseudo-English, so vocabularies are small and nothing is
copied from a data set) and records, for a set of random stress texts, the ids and decodes
`tokenizers` produces. tests/test_tokenizer.cpp replays them.

    python3 tools/make_tokenizer_fixtures.py tests/data/tokenizers [n_random=100]


Needs `pip install tokenizers`; the outputs are committed, so tests do not need it.
"""
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
BLOOM = r" ?[^(\s|[.,!?…。，、।۔،])]+"
SP = "\u2581"


def byte_level(pre, normalizer=None, post=None, specials=(), vocab=600, add_prefix_space=False):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = post or processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(vocab_size=vocab, special_tokens=list(specials),
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    return tok, trainer


def sentencepiece_like(normalizer, pre, decoder, byte_fallback=True, vocab=500):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=byte_fallback))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoder
    trainer = BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=80,
                         show_progress=False)
    return tok, trainer


def llama_decoder():
    return decoders.Sequence([decoders.Replace(SP, " "), decoders.ByteFallback(), decoders.Fuse(),
                              decoders.Strip(" ", 1, 0)])


def bos_template(bos, bos_id):
    return processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                         special_tokens=[(bos, bos_id)])


def add_byte_tokens(path):
    """Appends <0x00>..<0xFF> to the model vocabulary, as Llama's tokenizer.json has them."""
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    vocab = j["model"]["vocab"]
    n = max(max(vocab.values()), max(a["id"] for a in j["added_tokens"])) + 1
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = n + b
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)


def patch_model(path, **kw):
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    j["model"].update(kw)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)


def families():
    # name -> (tokenizer, trainer, extra added tokens, post-training patch)
    yield "qwen2", *byte_level(
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), "isolated"),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        normalizer=normalizers.NFC(), specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]), [], None
    yield "llama3", *byte_level(
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), "isolated"),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        post=processors.Sequence([processors.ByteLevel(trim_offsets=False), bos_template("<|begin_of_text|>", 0)]),
        specials=["<|begin_of_text|>", "<|end_of_text|>"]), [], lambda p: patch_model(p, ignore_merges=True)
    yield "bloom", *byte_level(
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(BLOOM), "isolated"),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        specials=["<unk>", "<s>", "</s>", "<pad>"]), [], None
    yield "neox", *byte_level(pre_tokenizers.ByteLevel(add_prefix_space=True), normalizer=normalizers.NFC(),
                              specials=["<|endoftext|>", "<|padding|>"]), \
        [AddedToken("<mask>", lstrip=True, rstrip=False, normalized=True, special=True),
         AddedToken(" [x] ", normalized=False, special=False)], None
    yield "opt", *byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False),
                             post=bos_template("</s>", 2), specials=["<s>", "<pad>", "</s>", "<unk>"]), [], None
    yield "llama", *sentencepiece_like(
        normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)]), None, llama_decoder()), \
        [AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False, special=True),
         AddedToken("[w]", single_word=True, normalized=False, special=False)], add_byte_tokens
    yield "mistral", *sentencepiece_like(
        None, pre_tokenizers.Metaspace(SP, prepend_scheme="first", split=False), llama_decoder()), \
        [AddedToken("[INST]", normalized=False, special=True),
         AddedToken("[/INST]", normalized=False, special=True, rstrip=True)], add_byte_tokens
    yield "metaspace_split", *sentencepiece_like(
        normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]),
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                 pre_tokenizers.Metaspace(SP, prepend_scheme="always", split=True)]),
        decoders.Metaspace(SP, prepend_scheme="always"), byte_fallback=False), \
        [AddedToken("hello world", normalized=True, special=False)], None


ATOMS = ["the", "The", " cat", "DOG", "ab", "x", "9", "42", "12345", "3.14", " ", "  ", "   ", "\t", "\n", "\n\n",
         "\r\n", " \n ", "'s", "'S", "'ll", "'VE", "don't", "I'm", ".", ",", "!", "?", "...", "…", "--", "(", ")",
         "\"", "$", "€", "é", "e\u0301", "ñ", "Ö", "ß", "İ", "ﬁ", "²", "½", "東京", "日本語", "。", "，", "、",
         "🤗", "🚀", "👩‍💻", "\u00a0", "\u3000", "\u2028", "\u200b", "\u0301", "مرحبا", "،", "नमस्ते", "।",
         "Привет", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<mask>", " <mask> ",
         "[x]", " [x] ", "[w]", " [w] ", "a[w]", "<s>", "</s>", "[INST]", "[/INST]", " [/INST] ", "hello world",
         "Hello World", "<unk>", "_", "▁", "\x01", "~"]


WORDS = ("the of and to in is was he she it that for on with as his her they at by this had from not "
         "but be are have one all were when we there can an which their said if do will each about how "
         "up out them then many some so these would other into has more two like him see time could no "
         "make than first been its who now people my made over did down only way find use may water "
         "long little very after words called just where most know get through back much before go good "
         "new write our used me man too any day same right look think also around another came come work "
         "three word must because does part even place well such here take why things help put years "
         "different away again off went old number great tell men say small every found still between "
         "name should home big give air line set own under read last never us left end along while might "
         "next sound below saw something thought both few those always looked show large often together "
         "asked house don't world going want school important until form food keep children feet land "
         "side without boy once animals life enough took sometimes four head above kind began almost live "
         "page got earth need far hand high year mother light parts country father let night following "
         "picture being study second eyes soon times story boys since white days paper hard near sentence "
         "better best across during today others however sure means knew it's try told young miles sun "
         "ways thing whole hear example heard several change answer room sea against top turned learn "
         "point city play toward five using himself usually").split()


def training_lines(rng, n=20000):
    lines = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(3, 18)):
            r = rng.random()
            w = rng.choice(WORDS) if r < 0.85 else rng.choice(ATOMS) if r < 0.95 else str(rng.randint(0, 2025))
            words.append(w.capitalize() if rng.random() < 0.1 else w)
        lines.append(" ".join(words) + rng.choice([".", ".", ",", "!", "?", ""]))
    return lines


def stress_texts(rng, n_random):
    texts = ["", " ", "Hello world", " Hello world", "Hello  world ", "\n", "a",
             " ".join(training_lines(rng, 12))]
    for _ in range(n_random):
        texts.append("".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 25))))
    return texts


def main():
    out = sys.argv[1]
    n_random = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rng = random.Random(1234)
    train = training_lines(rng)
    texts = stress_texts(rng, n_random)
    os.makedirs(out, exist_ok=True)
    cases = {}
    for name, tok, trainer, extra, patch in families():
        tok.train_from_iterator(train, trainer)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "tokenizer.json")
        tok.save(path)
        if patch:  # before adding tokens, so that added-token ids follow the whole vocabulary
            patch(path)
            tok = Tokenizer.from_file(path)
        if extra:
            tok.add_tokens(extra)
            tok.save(path)
        tok = Tokenizer.from_file(path)
        entries = []
        for t in texts:
            ids = tok.encode(t).ids
            # Fields equal to another are left out to keep the file small (the test falls back).
            e = {"text": t, "ids": ids}
            ns = tok.encode(t, add_special_tokens=False).ids
            if ns != ids:
                e["ids_no_special"] = ns
            e["decode_skip"] = tok.decode(ids, skip_special_tokens=True)
            keep = tok.decode(ids, skip_special_tokens=False)
            if keep != e["decode_skip"]:
                e["decode_keep"] = keep
            entries.append(e)
        cases[name] = entries
        print(name, tok.get_vocab_size(), os.path.getsize(path))
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
