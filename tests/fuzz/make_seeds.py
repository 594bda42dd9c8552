#!/usr/bin/env python3
"""Writes fuzz seeds derived from the real files in shared/ into OUT/<target>/ (tools/fuzz.sh
calls it at run time; the seeds live in the build folder only, never in the repository).

Each seed is small (libFuzzer mutates best around a few KB) but keeps the structure of the real
file: the real safetensors header with every tensor shrunk to at most 2 per dimension, the real
config.json files, tokenizer.json cut down to a few hundred tokens, and text excerpts.

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


def main():
    shared, out = sys.argv[1], sys.argv[2]
    safetensors_seeds(shared, out)


if __name__ == "__main__":
    main()
