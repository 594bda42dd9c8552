#!/usr/bin/env python3
"""Hugging Face transformers fp16 baseline for bench/bench_cuda_model: a Llama-3-8B-shaped
LlamaForCausalLM built from a config with random weights directly in fp16 on the GPU (no
download), timing the prefill of a P-token prompt (median of --reps after a warm-up) and greedy
decoding at batch 1 (N one-token steps with the KV cache, each synchronised, like ours), then
greedy decoding at each --batches size B (B copies of the prompt prefilled as one batch, then
one-token steps of the whole batch; tokens/s = B / median step).

    python3 tools/gpu/hf_baseline.py [--layers 32] [--prompt 2048] [--decode 64] [--attn sdpa] [--batches 8,32]
"""
import argparse
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--batches", default="8,32")
    a = ap.parse_args()
    cfg = LlamaConfig(hidden_size=4096, num_hidden_layers=a.layers, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=128, intermediate_size=14336,
                      vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    cfg._attn_implementation = a.attn
    torch.manual_seed(0)
    t0 = time.time()
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.eval()
    torch.cuda.synchronize()
    gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(f"built in {time.time() - t0:.1f} s, {gib:.2f} GiB, transformers {transformers.__version__}, "
          f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    ids = torch.randint(0, cfg.vocab_size, (1, a.prompt), device="cuda")

    with torch.inference_mode():
        model(ids, use_cache=False)  # warm-up
        torch.cuda.synchronize()
        pre = []
        for _ in range(a.reps):
            t = time.perf_counter()
            out = model(ids, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
            pre.append(time.perf_counter() - t)
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        steps = []
        t_all = time.perf_counter()
        for _ in range(a.decode):
            t = time.perf_counter()
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            steps.append(time.perf_counter() - t)
        wall = time.perf_counter() - t_all
        batch_rows = []
        for B in [int(x) for x in a.batches.split(",") if x]:
            out = model(ids.expand(B, -1).contiguous(), use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            bsteps = []
            for i in range(max(a.decode // 2, 4)):
                t = time.perf_counter()
                out = model(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
                if i >= 2:
                    bsteps.append(time.perf_counter() - t)
            del out, past
            torch.cuda.empty_cache()
            bd = statistics.median(bsteps)
            batch_rows.append(f"| HF transformers fp16 ({a.attn}) | {B} | {1e3 * bd:.2f} | {B / bd:.1f} |")
    p = statistics.median(pre)
    d = statistics.median(steps)
    print(f"| HF transformers fp16 ({a.attn}) | {gib:.2f} | {1e3 * p:.1f} | {a.prompt / p:.0f} | "
          f"{1e3 * d:.2f} | {1 / d:.1f} | {a.decode / wall:.1f} |")
    for row in batch_rows:
        print(row)


if __name__ == "__main__":
    main()
