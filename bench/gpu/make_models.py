#!/usr/bin/env python3
"""Makes the GPU benchmark's random-weight bf16 checkpoints with transformers (save_pretrained).

  llama-1b/     Llama-3.2-1B's shape: hidden 2048, MLP 8192, 16 layers, 32 heads, 8 KV heads,
                head_dim 64, vocab 128256, tied embeddings, llama3 rope scaling (factor 32).
  powermoe-3b/  ibm-research/PowerMoE-3b's config (GraniteMoeForCausalLM): hidden 1536, expert MLP
                512, 32 layers, 24 heads, 8 KV heads, 40 experts, top 8, vocab 49152, the Granite
                multipliers, tied embeddings.

Each directory also gets a synthesized byte-level BPE tokenizer.json covering exactly the model's
vocabulary (synth_tokenizer.py: there is no internet to download the real ones, and the engine
always loads one), tokenizer_config.json and generation_config.json. The weights are random
(torch.manual_seed), so generated text is meaningless; only the shapes matter for throughput.

A directory already complete for the same spec (its bench_model.json says so) is skipped.

usage: make_models.py --out DIR [--only llama-1b|powermoe-3b] [--seed 0] [--device cuda|cpu]
"""
import argparse
import hashlib
import inspect
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth_tokenizer  # noqa: E402  (next to this file; standard library only)

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}

MODELS = {
    "llama-1b": {
        "config_class": "LlamaConfig",
        "config": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                       num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                       head_dim=64, hidden_act="silu", max_position_embeddings=131072,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=False,
                       mlp_bias=False, initializer_range=0.02, bos_token_id=128000,
                       eos_token_id=128001, pad_token_id=None),
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3_ROPE,
        # Llama 3's specials: BOS, EOS, then reserved ids up to the end of the vocabulary.
        "specials": dict([(128000, "<|begin_of_text|>"), (128001, "<|end_of_text|>")] +
                         [(i, f"<|reserved_special_token_{i - 128002}|>")
                          for i in range(128002, 128256)]),
        "tokenizer_style": "llama3",
        "bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": None,
    },
    "powermoe-3b": {
        "config_class": "GraniteMoeConfig",
        "config": dict(vocab_size=49152, hidden_size=1536, intermediate_size=512,
                       num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8,
                       num_local_experts=40, num_experts_per_tok=8, hidden_act="silu",
                       max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       embedding_multiplier=12.0, attention_multiplier=0.015625,
                       residual_multiplier=0.22, logits_scaling=6.0, attention_bias=False,
                       initializer_range=0.02, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                       output_router_logits=False),
        "rope_theta": 10000.0,
        "rope_scaling": None,
        # StarCoder-style vocabulary (Granite): <|endoftext|> is BOS, EOS and padding, id 0.
        "specials": {0: "<|endoftext|>"},
        "tokenizer_style": "gpt2",
        "bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>",
    },
}


def spec_digest(name, seed):
    spec = dict(MODELS[name], seed=seed, version=2)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_complete(d, digest):
    """True when `d` holds a finished model of this spec (marker written last, files present)."""
    marker = os.path.join(d, "bench_model.json")
    if not os.path.exists(marker):
        return False
    try:
        info = json.load(open(marker))
    except ValueError:
        return False
    if info.get("digest") != digest:
        return False
    return all(os.path.exists(os.path.join(d, f)) for f in info.get("files", []))


def make_config(transformers, name):
    m = MODELS[name]
    cls = getattr(transformers, m["config_class"])
    kw = dict(m["config"])
    params = inspect.signature(cls.__init__).parameters
    # transformers >= 5 nests rope under rope_parameters; older versions take rope_theta and
    # rope_scaling (our config loader reads both spellings).
    if "rope_parameters" in params:
        rope = dict(m["rope_scaling"] or {"rope_type": "default"})
        rope["rope_theta"] = m["rope_theta"]
        kw["rope_parameters"] = rope
    else:
        kw["rope_theta"] = m["rope_theta"]
        kw["rope_scaling"] = m["rope_scaling"]
    return cls(**kw)


def check_saved_config(d, name):
    """Fails when config.json lost something our loader and the benchmark rely on."""
    m = MODELS[name]
    c = json.load(open(os.path.join(d, "config.json")))
    for key, want in m["config"].items():
        if want is None or key in ("initializer_range", "output_router_logits"):
            continue
        got = c.get(key)
        if key == "head_dim" and got is None:
            got = c["hidden_size"] // c["num_attention_heads"]
        if got != want:
            raise RuntimeError(f"{d}/config.json: {key} is {got!r}, wanted {want!r}")
    rp = c.get("rope_parameters") or {}
    rs = c.get("rope_scaling") or {}
    theta = rp.get("rope_theta", c.get("rope_theta"))
    if theta != m["rope_theta"]:
        raise RuntimeError(f"{d}/config.json: rope_theta is {theta!r}, wanted {m['rope_theta']}")
    if m["rope_scaling"]:
        scaling = rp if rp.get("rope_type", "default") != "default" else rs
        for key, want in m["rope_scaling"].items():
            got = scaling.get(key, scaling.get("type") if key == "rope_type" else None)
            if got != want:
                raise RuntimeError(f"{d}/config.json: rope {key} is {got!r}, wanted {want!r}")
    return c


def make_model(name, out_dir, seed, device):
    import torch
    import transformers

    d = os.path.join(out_dir, name)
    digest = spec_digest(name, seed)
    if is_complete(d, digest):
        print(f"{name}: complete already in {d}, skipped")
        return d
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    m = MODELS[name]
    t0 = time.time()
    cfg = make_config(transformers, name)
    torch.manual_seed(seed)
    with torch.device(device):
        try:
            model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.eval()
    # Any parameter left uninitialised (torch.empty) would hold garbage, possibly NaN/inf, and make
    # sampling fail; redraw such tensors the way _init_weights would.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if not torch.isfinite(p).all():
                print(f"{name}: {pname} was not finite after init; redrawn")
                if p.dim() == 1:
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, cfg.initializer_range)
    n_params = sum(p.numel() for p in model.parameters())
    t1 = time.time()
    try:
        model.save_pretrained(d, safe_serialization=True)
    except TypeError:  # a transformers that always writes safetensors and dropped the flag
        model.save_pretrained(d)
    t2 = time.time()
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    config = check_saved_config(d, name)

    tok = synth_tokenizer.synthesize(config["vocab_size"], m["specials"], m["tokenizer_style"],
                                     bos_id=config.get("bos_token_id"), seed=seed)
    synth_tokenizer.write(tok, d)
    synth_tokenizer.write_tokenizer_config(d, m["bos"], m["eos"], m["pad"],
                                           config["max_position_embeddings"])
    gen_path = os.path.join(d, "generation_config.json")
    if not os.path.exists(gen_path):
        gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
               if config.get(k) is not None}
        json.dump(gen, open(gen_path, "w"), indent=2)
    check_tokenizer_with_hf(d)

    files = sorted(f for f in os.listdir(d) if not f.startswith("bench_model"))
    st_bytes = sum(os.path.getsize(os.path.join(d, f)) for f in files if f.endswith(".safetensors"))
    json.dump({"name": name, "digest": digest, "seed": seed, "params": n_params,
               "safetensors_bytes": st_bytes, "files": files,
               "torch": torch.__version__, "transformers": transformers.__version__},
              open(os.path.join(d, "bench_model.json"), "w"), indent=2)
    print(f"{name}: {n_params / 1e9:.3f} B params, {st_bytes / 1e9:.2f} GB safetensors in {d} "
          f"(init {t1 - t0:.1f} s, save {t2 - t1:.1f} s); files {files}")
    return d


def check_tokenizer_with_hf(d):
    """Loads the synthesized tokenizer with HF `tokenizers` (when installed): it must parse and
    round-trip a text; the ids of every byte-level token must decode."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("  (tokenizers not installed: HF check of tokenizer.json skipped)")
        return
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    text = "Hello world, the quick brown fox jumps over 12345 lazy dogs.\n  Ünïcödé ✓ 日本語"
    ids = tk.encode(text, add_special_tokens=False).ids
    back = tk.decode(ids, skip_special_tokens=False)
    if back != text:
        raise RuntimeError(f"{d}/tokenizer.json: HF round trip gave {back!r}")
    print(f"  HF tokenizers: vocab {tk.get_vocab_size()} (with added), {len(ids)} ids for "
          f"{len(text.encode())} bytes, round trip ok")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory for llama-1b/ and powermoe-3b/")
    p.add_argument("--only", choices=sorted(MODELS), action="append",
                   help="make only this model (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="where to initialise (default: cuda if present)")
    args = p.parse_args()
    import torch
    import transformers
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"make_models: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"init on {device}")
    os.makedirs(args.out, exist_ok=True)
    for name in args.only or list(MODELS):
        make_model(name, args.out, args.seed, device)


if __name__ == "__main__":
    main()
