#!/usr/bin/env python3
"""Writes fuzz seeds derived from the real files in shared/ into OUT/<target>/ (tools/fuzz.sh
calls it at run time; the seeds live in the build folder only, never in the repository).

Each seed is small (libFuzzer mutates best around a few KB) but keeps the structure of the real
file: the real safetensors header with every tensor shrunk to at most 2 per dimension, the real
config.json files, tokenizer.json cut down to a few hundred tokens, and text excerpts. The
repository's own small fixtures (tests/fixtures/*/config.json, tests/data/tokenizers) are used
the same way.

usage: make_seeds.py SHARED_DIR OUT_DIR
"""
import json
import os
import struct
import sys


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def safetensors_seeds(shared, out):
    path = os.path.join(shared, "models/stories260K/model.safetensors")
    if not os.path.exists(path):
        return
    raw = read(path)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    # The real header and the first bytes of the data area (the tensors then extend past it).
    # The whole header is 4.8 KB: fine as one seed, but inputs that size cut the execution rate
    # several times, so the other seeds keep only the first few tensors.
    write(out, "fuzz_safetensors", "stories260K-header-only.safetensors", raw[:8 + n + 64])
    # A valid file: the real names, dtypes and metadata of the first tensors, each dimension cut
    # to <= 2.
    small, blob = {}, b""
    for name, t in list(header.items())[:8]:
        if name == "__metadata__":
            small[name] = t
            continue
        shape = [min(d, 2) for d in t["shape"]]
        size = {"F32": 4, "F16": 2, "BF16": 2}.get(t["dtype"], 1)
        for d in shape:
            size *= d
        begin = t["data_offsets"][0]
        small[name] = {"dtype": t["dtype"], "shape": shape,
                       "data_offsets": [len(blob), len(blob) + size]}
        blob += data[begin:begin + size]
    text = json.dumps(small, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    write(out, "fuzz_safetensors", "stories260K-shrunk.safetensors",
          struct.pack("<Q", len(text)) + text.encode() + blob)
    # An index over the same names split into two shards.
    names = [k for k in header if k != "__metadata__"][:12]
    wm = {k: "model-%05d-of-00002.safetensors" % (1 + i * 2 // len(names))
          for i, k in enumerate(names)}
    write(out, "fuzz_safetensors_index", "stories260K-index.json",
          json.dumps({"metadata": {"total_size": len(data)}, "weight_map": wm}, indent=2))


def shrink_tokenizer(j, keep=300):
    """tokenizer.json cut to its first `keep` vocabulary ids and the merges among them; added
    tokens past the cut are renumbered after it (and the post-processor's ids with them)."""
    m = j["model"]
    vocab = {t: i for t, i in m["vocab"].items() if i < keep}
    remap = {i: i for i in vocab.values()}
    for a in j.get("added_tokens") or []:
        if a["id"] not in remap:
            remap[a["id"]] = keep + len([k for k in remap if k >= keep])
            vocab.setdefault(a["content"], remap[a["id"]])
        a["id"] = remap[a["id"]]
    merges = []
    for mg in m.get("merges") or []:
        a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(mg)
    m["vocab"], m["merges"] = vocab, merges

    def fix_ids(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "ids" and isinstance(v, list):
                    node[k] = [remap.get(i, 0) if isinstance(i, int) else i for i in v]
                else:
                    fix_ids(v)
        elif isinstance(node, list):
            for v in node:
                fix_ids(v)
    fix_ids(j.get("post_processor"))
    return j


def tokenizer_seeds(shared, repo, out):
    sources = [os.path.join(shared, "models/stories260K/tokenizer.json"),
               os.path.join(shared, "models/gpt2-tokenizer/tokenizer.json")]
    fixtures = os.path.join(repo, "tests/data/tokenizers")
    if os.path.isdir(fixtures):
        sources += [os.path.join(fixtures, d, "tokenizer.json") for d in sorted(os.listdir(fixtures))]
    for src in sources:
        if not os.path.exists(src):
            continue
        name = os.path.basename(os.path.dirname(src))
        j = shrink_tokenizer(json.loads(read(src)))
        write(out, "fuzz_tokenizer_json", name + "-shrunk.json", json.dumps(j, ensure_ascii=False))
    # Text for the encoders: the reference texts (a LAMBADA excerpt, a Unicode stress string)
    # in slices of at most 512 bytes, and a few lines of WikiText.
    ref = os.path.join(shared, "reference/tokenizer_reference.json")
    if os.path.exists(ref):
        for key, v in json.loads(read(ref)).items():
            b = v["text"].encode("utf-8")
            for k in range(0, min(len(b), 2048), 512):
                write(out, "fuzz_tokenizer_encode", "%s-%d.txt" % (key, k),
                      b[k:k + 512].decode("utf-8", "ignore"))
    wiki = os.path.join(shared, "data/wikitext-2/wiki.test.raw")
    if os.path.exists(wiki):
        lines = [l for l in read(wiki).decode("utf-8").splitlines() if l.strip()][:40:5]
        for k, line in enumerate(lines):
            write(out, "fuzz_tokenizer_encode", "wikitext-%d.txt" % k, line[:512])


def config_seeds(shared, repo, out):
    paths = [os.path.join(shared, "models/stories260K/config.json"),
             os.path.join(shared, "models/gpt2-tokenizer/config.json")]
    fixtures = os.path.join(repo, "tests/fixtures")
    if os.path.isdir(fixtures):
        paths += [os.path.join(fixtures, d, "config.json") for d in sorted(os.listdir(fixtures))]
    for p in paths:
        if os.path.exists(p):
            write(out, "fuzz_config", os.path.basename(os.path.dirname(p)) + ".json", read(p))


def main():
    shared, out = sys.argv[1], sys.argv[2]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    safetensors_seeds(shared, out)
    tokenizer_seeds(shared, repo, out)
    config_seeds(shared, repo, out)


if __name__ == "__main__":
    main()
