#!/usr/bin/env python3
"""Make tiny random-initialised Hugging Face checkpoints of each architecture family, with
Hugging Face transformers' own outputs as references, for llmint8's model tests.

Needs torch, transformers and safetensors (run it where they are installed):

    python3 tools/make_fixtures.py --out tests/fixtures

Writes, under --out:
  <family>/config.json, model.safetensors[, generation_config.json]   float32 checkpoint
  <family>/reference.safetensors   input_ids I64 [T], logits F32 [T, vocab], greedy_ids I64 [G]
  <family>/reference.json          versions, config summary, init scheme, logit statistics
  llama-int8-hf/                   the llama fixture in bitsandbytes' serialized 8-bit layout,
                                   written here independently of bitsandbytes (not installed)
  llama-int8-hf/expected_int8.safetensors   CB/SCB of one q_proj, to compare a loader with

Every tensor is re-initialised (the families' own _init_weights leave norms at 1 and biases at
0, and some ignore initializer_range), so that a loader that drops or mis-maps any tensor,
norm weights and biases included, changes the logits.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import traceback

import torch
import transformers
import safetensors
from safetensors.torch import save_file, load_file

SEED = 20261122
T = 16            # prompt length of the logits reference
PREFIX = 4        # greedy generation continues input_ids[:PREFIX]
NEW_TOKENS = 8
VOCAB = 128
HIDDEN = 64
LAYERS = 2
HEADS = 4
INTER = 128
MAXPOS = 64
GREEDY_MARGIN = 0.1  # wanted top1-top2 logit gap at every greedy step (room for int8 error)
MAX_ID_SEEDS = 200
INIT_STD = 0.25   # std of every weight matrix / embedding; chosen for logit std of a few units
NORM_STD = 0.1    # norm weights 1+N(0,NORM_STD), every bias N(0,NORM_STD)
KEEP = {"config.json", "model.safetensors", "generation_config.json"}
SIZE_LIMIT = 512 * 1024


def family_configs():
    """(family, config class name, model class name, kwargs). Shapes as small as the tests need."""
    common_tok = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return [
        ("llama", "LlamaConfig", "LlamaForCausalLM", dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=MAXPOS,
            rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True, **common_tok)),
        ("qwen2", "Qwen2Config", "Qwen2ForCausalLM", dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=MAXPOS,
            rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False, use_sliding_window=False,
            **common_tok)),
        ("opt", "OPTConfig", "OPTForCausalLM", dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=INTER, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, max_position_embeddings=MAXPOS, word_embed_proj_dim=HIDDEN,
            do_layer_norm_before=True, activation_function="relu", enable_bias=True,
            tie_word_embeddings=True, **common_tok)),
        ("gpt2", "GPT2Config", "GPT2LMHeadModel", dict(
            vocab_size=VOCAB, n_embd=HIDDEN, n_inner=INTER, n_layer=LAYERS, n_head=HEADS,
            n_positions=MAXPOS, activation_function="gelu_new", tie_word_embeddings=True,
            **common_tok)),
        ("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM", dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, max_position_embeddings=MAXPOS, rotary_pct=0.25,
            use_parallel_residual=True, hidden_act="gelu", tie_word_embeddings=False, **common_tok)),
        # BLOOM's MLP width is fixed at 4*hidden and it has no position table (ALiBi).
        ("bloom", "BloomConfig", "BloomForCausalLM", dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS,
            apply_residual_connection_post_layernorm=False, tie_word_embeddings=True, **common_tok)),
    ]


def reinit_(model, std):
    """Every parameter random: matrices/embeddings N(0,std), norm weights 1+N(0,NORM_STD),
    biases N(0,NORM_STD). Uses the global torch RNG (seeded by the caller)."""
    norm_params = set()
    for mod in model.modules():
        if "norm" in type(mod).__name__.lower():
            for p in mod.parameters(recurse=False):
                norm_params.add(id(p))
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied tensors appear once
            if id(p) in norm_params and name.endswith("weight"):
                p.copy_(1.0 + NORM_STD * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(NORM_STD * torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))


def build(cfg_cls, model_cls, kwargs, std):
    torch.manual_seed(SEED)
    cfg = getattr(transformers, cfg_cls)(**kwargs)
    cfg._attn_implementation = "eager"  # plain softmax(QK^T)V as the reference
    model = getattr(transformers, model_cls)(cfg).to(torch.float32).eval()
    reinit_(model, std)
    return model


def input_ids(seed=SEED):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (T,), generator=g, dtype=torch.int64)
    ids[0] = 1
    return ids


def top2_margin(logits):
    """top1 - top2 per row: how far an argmax is from a tie."""
    t = torch.topk(logits, 2, dim=-1).values
    return t[..., 0] - t[..., 1]


def greedy_no_cache(model, prefix, n):
    """Greedy decoding by a full forward per step (no KV cache): the cache-free reference."""
    ids = prefix.clone()
    margins = []
    with torch.no_grad():
        for _ in range(n):
            last = model(ids[None]).logits[0, -1]
            margins.append(float(top2_margin(last)))
            ids = torch.cat([ids, last.argmax().view(1)])
    return ids[len(prefix):], margins


def choose_ids(model, log, family):
    """Prompt ids from the first seed (SEED, SEED+1, ...) whose greedy continuation is far from
    ties at every step, varied (>= 5 distinct ids) and free of the special ids 0..2, so that an
    engine whose logits differ slightly (summation order, int8) must still give the same ids."""
    best = None
    for k in range(MAX_ID_SEEDS):
        ids = input_ids(SEED + k)
        g, margins = greedy_no_cache(model, ids[:PREFIX], NEW_TOKENS)
        ok_margin = min(margins) >= GREEDY_MARGIN
        # No pad/bos/eos (0..2) in the continuation: an engine that stops at eos must still match.
        if ok_margin and len(set(g.tolist())) >= 5 and int(g.min()) >= 3:
            return SEED + k, ids
        if best is None or min(margins) > best[0]:
            best = (min(margins), SEED + k, ids)
    log(f"[{family}] WARNING: no prompt seed gave greedy margin >= {GREEDY_MARGIN} with >= 5 distinct "
        f"non-special tokens; using seed {best[1]} (min margin {best[0]:.4f})")
    return best[1], best[2]


def greedy_generate(model, prefix, n):
    gc = transformers.GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n,
                                       min_new_tokens=0, use_cache=True, eos_token_id=None,
                                       pad_token_id=0, bos_token_id=1)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(prefix[None], attention_mask=torch.ones(1, len(prefix), dtype=torch.int64),
                             generation_config=gc)
    return out[0, len(prefix):]


def config_summary(cfg):
    keys = ["model_type", "architectures", "vocab_size", "hidden_size", "n_embd", "num_hidden_layers",
            "n_layer", "num_attention_heads", "n_head", "num_key_value_heads", "intermediate_size",
            "ffn_dim", "n_inner", "max_position_embeddings", "n_positions", "tie_word_embeddings",
            "hidden_act", "activation_function", "rms_norm_eps", "layer_norm_eps",
            "layer_norm_epsilon", "rope_parameters", "rotary_pct", "use_parallel_residual",
            "do_layer_norm_before", "attention_bias", "apply_residual_connection_post_layernorm"]
    d = cfg.to_dict()
    return {k: d[k] for k in keys if k in d}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_family(out, family, cfg_cls, model_cls, kwargs, log):
    d = os.path.join(out, family)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    model = build(cfg_cls, model_cls, kwargs, INIT_STD)
    try:
        model.save_pretrained(d, safe_serialization=True)
    except TypeError:  # newer transformers always write safetensors and dropped the flag
        model.save_pretrained(d)
    for f in os.listdir(d):
        if f not in KEEP:
            p = os.path.join(d, f)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        raise RuntimeError(f"{family}: save_pretrained wrote no model.safetensors: {os.listdir(d)}")

    # Reference from the checkpoint as read back, so it is exactly what is on disk.
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        d, dtype=torch.float32, attn_implementation="eager").eval()
    ids_seed, ids = choose_ids(model, log, family)
    with torch.no_grad():
        logits = ref(ids[None], use_cache=False).logits[0].float().contiguous()
        logits_mem = model(ids[None], use_cache=False).logits[0].float()
    if not torch.equal(logits, logits_mem):
        raise RuntimeError(f"{family}: reloaded model differs from the one saved "
                           f"(max diff {float((logits - logits_mem).abs().max())})")
    greedy_ref, margins = greedy_no_cache(ref, ids[:PREFIX], NEW_TOKENS)
    greedy = greedy_generate(ref, ids[:PREFIX], NEW_TOKENS)
    if greedy.shape != (NEW_TOKENS,) or not torch.equal(greedy, greedy_ref):
        raise RuntimeError(f"{family}: generate() {greedy.tolist()} != no-cache greedy {greedy_ref.tolist()}")

    save_file({"input_ids": ids.contiguous(), "logits": logits,
               "greedy_ids": greedy.to(torch.int64).contiguous()},
              os.path.join(d, "reference.safetensors"), metadata={"format": "pt"})

    st = load_file(os.path.join(d, "model.safetensors"))
    files = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    total = sum(files.values())
    info = {
        "family": family,
        "model_class": model_cls,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "safetensors_version": safetensors.__version__,
        "seed": SEED,
        "input_ids_seed": ids_seed,
        "input_ids_rule": "torch.randint(3, vocab, (T,), generator=torch.Generator().manual_seed(input_ids_seed)); "
                          "input_ids[0] = 1; input_ids_seed is the first of SEED, SEED+1, ... whose greedy steps "
                          f"all have top1-top2 >= {GREEDY_MARGIN}, with >= 5 distinct ids, none below 3",
        "init": {"weights_std": INIT_STD, "norm_weight": f"1+N(0,{NORM_STD})", "bias": f"N(0,{NORM_STD})"},
        "attn_implementation": "eager",
        "config": config_summary(ref.config),
        "tensors": {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in sorted(st.items())},
        "input_ids": ids.tolist(),
        "greedy_prefix_len": PREFIX,
        "greedy_ids": greedy.tolist(),
        "greedy_step_top2_margin_min": min(margins),
        "logits_top2_margin_min": float(top2_margin(logits).min()),
        "logits_max_abs": float(logits.abs().max()),
        "logits_std": float(logits.std()),
        "logits_row_std_mean": float(logits.std(dim=-1).mean()),
        "files": files,
        "model_safetensors_sha256": sha256(os.path.join(d, "model.safetensors")),
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    if family == "gpt_neox":  # the partial rotary fraction must have reached the model
        rp = ref.config.to_dict().get("rope_parameters") or {}
        frac = rp.get("partial_rotary_factor", ref.config.to_dict().get("rotary_pct"))
        if frac != 0.25:
            raise RuntimeError(f"gpt_neox: rotary fraction is {frac}, wanted 0.25")
    log(f"[{family}] ok: {len(st)} tensors, dir {total} bytes {files}; logits std {info['logits_std']:.3f} "
        f"max|.| {info['logits_max_abs']:.3f} min top2 margin {info['logits_top2_margin_min']:.4f}; "
        f"greedy {greedy.tolist()} min margin {min(margins):.4f}")
    if total > SIZE_LIMIT:
        log(f"[{family}] WARNING: {total} bytes > {SIZE_LIMIT}")
    log(f"[{family}] config.json: " + open(os.path.join(d, "config.json")).read().replace("\n", " "))
    return info


def int8_row_quant(w):
    """bitsandbytes' default-backend int8_vectorwise_quant applied to the fp16-cast weight:
    SCB = row absmax (float32), CB = round_half_even(W16 * scale) in float32, zero row -> 0.
    bitsandbytes writes the scale as `127.0 / row_stats`, which PyTorch evaluates as
    row_stats.reciprocal() * 127 (two float32 roundings); spelled out here so the files do not
    depend on that detail. It differs from a correctly rounded 127/SCB at rare exact .5 ties."""
    w16 = w.to(torch.float16)
    scb = w16.abs().amax(dim=1).float()
    scale = torch.where(scb > 0, scb.reciprocal() * 127.0, torch.zeros_like(scb))
    cb = torch.round(w16.float() * scale.unsqueeze(-1)).to(torch.int8)
    return cb.contiguous(), scb.contiguous()


FORMULA = ("per output row of every nn.Linear except lm_head: W16 = W.half(); SCB = max|W16| over the row "
           "(float32); scale = fl32(fl32(1/SCB) * 127) (PyTorch's evaluation of bitsandbytes' 127.0/SCB); "
           "CB = round_half_even(fl32(W16 * scale)) int8; zero row -> SCB 0, CB 0. Other tensors float16. "
           "A correctly rounded 127/SCB gives CB off by 1 at rare exact .5 ties.")


def make_llama_int8(out, log):
    src = os.path.join(out, "llama")
    d = os.path.join(out, "llama-int8-hf")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    st = load_file(os.path.join(src, "model.safetensors"))
    outt = {}
    n_q = 0
    for k, v in st.items():
        mod = k.rsplit(".", 1)[0]
        if mod in linear and k.endswith(".weight"):
            cb, scb = int8_row_quant(v)
            outt[k] = cb
            outt[mod + ".SCB"] = scb
            outt[mod + ".weight_format"] = torch.tensor(0, dtype=torch.uint8)
            n_q += 1
        else:
            outt[k] = v.to(torch.float16).contiguous()
    if n_q != len(linear):
        raise RuntimeError(f"llama-int8: quantized {n_q} weights but the model has {len(linear)} Linear layers")
    save_file(outt, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    qname = "model.layers.1.self_attn.q_proj"
    cb, scb = int8_row_quant(st[qname + ".weight"])
    save_file({"CB": cb, "SCB": scb, "weight_f16": st[qname + ".weight"].to(torch.float16).contiguous()},
              os.path.join(d, "expected_int8.safetensors"), metadata={"format": "pt", "tensor": qname})

    # config.json as transformers writes it for a bitsandbytes 8-bit model.
    qc_source = "BitsAndBytesConfig(load_in_8bit=True).to_dict()"
    try:
        qc = transformers.BitsAndBytesConfig(load_in_8bit=True).to_dict()
    except Exception as e:  # noqa: BLE001 - fall back to the documented defaults
        log(f"[llama-int8-hf] BitsAndBytesConfig failed ({e!r}); writing the default dict by hand")
        qc_source = "hand-written defaults"
        qc = {"quant_method": "bitsandbytes", "load_in_8bit": True, "load_in_4bit": False,
              "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None,
              "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False,
              "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": False,
              "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "uint8",
              "_load_in_4bit": False, "_load_in_8bit": True}
    qc = json.loads(json.dumps(qc, default=str))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = qc
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = "float16"
    cfg["dtype"] = "float16"
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    if os.path.exists(os.path.join(src, "generation_config.json")):
        shutil.copy(os.path.join(src, "generation_config.json"), d)
    info = {
        "source": "llama fixture (same weights), converted by tools/make_fixtures.py",
        "formula": FORMULA,
        "quantization_config_source": qc_source,
        "expected_int8_tensor": qname,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tensors": {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in sorted(outt.items())},
        "files": {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))},
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    log(f"[llama-int8-hf] ok: {n_q} int8 weights, files {info['files']}")
    log(f"[llama-int8-hf] quantization_config ({qc_source}): {json.dumps(qc, sort_keys=True)}")


def scale_sweep(log):
    """Logit std of each family for a few init scales (diagnostic, picks INIT_STD)."""
    ids = input_ids()
    for family, cfg_cls, model_cls, kwargs in family_configs():
        row = []
        for std in (0.1, 0.2, 0.25, 0.3, 0.5):
            try:
                m = build(cfg_cls, model_cls, kwargs, std)
                with torch.no_grad():
                    lg = m(ids[None], use_cache=False).logits[0]
                row.append(f"{std}:{float(lg.std()):.2f}/{float(lg.abs().max()):.1f}")
            except Exception as e:  # noqa: BLE001
                row.append(f"{std}:ERR {e!r}")
        log(f"[sweep] {family} std:logit_std/max|logit| " + " ".join(row))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (e.g. tests/fixtures)")
    ap.add_argument("--only", nargs="*", help="families to make (default: all)")
    ap.add_argument("--log", help="also write the progress log to this file")
    ap.add_argument("--sweep", action="store_true", help="also print logit scale for several init stds")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    logf = open(a.log, "w") if a.log else None

    def log(msg):
        print(msg, flush=True)
        if logf:
            logf.write(msg + "\n")
            logf.flush()

    log(f"torch {torch.__version__} transformers {transformers.__version__} safetensors {safetensors.__version__}")
    if a.sweep:
        scale_sweep(log)
    failed = []
    for family, cfg_cls, model_cls, kwargs in family_configs():
        if a.only and family not in a.only:
            continue
        try:
            make_family(a.out, family, cfg_cls, model_cls, kwargs, log)
        except Exception:  # noqa: BLE001 - report each family, keep going
            failed.append(family)
            log(f"[{family}] FAILED\n{traceback.format_exc()}")
    if not a.only or "llama-int8-hf" in a.only:
        if os.path.exists(os.path.join(a.out, "llama", "model.safetensors")) and "llama" not in failed:
            try:
                make_llama_int8(a.out, log)
            except Exception:  # noqa: BLE001
                failed.append("llama-int8-hf")
                log(f"[llama-int8-hf] FAILED\n{traceback.format_exc()}")
        else:
            failed.append("llama-int8-hf")
            log("[llama-int8-hf] skipped: no llama fixture")
    log("failed: " + (", ".join(failed) if failed else "none"))
    if logf:
        logf.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
