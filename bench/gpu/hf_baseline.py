#!/usr/bin/env python3
"""The baseline of the GPU benchmark: HF transformers `generate` on the same weights, bf16.

Builds the engine benchmark's kind of workload (prompts of random token ids of a fixed input
length; exactly --output-len new tokens each, sampled with temperature 1.0, top_p 1.0, no top-k,
EOS suppressed until then with min_new_tokens, which is ignore_eos for a fixed length) and runs
it as batches of --batch-size prompts through model.generate. One untimed generate at the same
batch size warms up kernels and the allocator first. How long it runs matters a great deal: on an
H100 (2026-11-25) a batch of 256 x 128 new tokens took 8-9 s right after a 4-token warm-up and
2.3-2.6 s once one full-length batch had run (the cache grows step by step, and every new length
is met for the first time in the first long batch). --warmup-tokens defaults to --output-len, so
the timed batches are transformers' steady state; --warmup-tokens 4 gives the cold figure (what
the first batch of a fresh process sees). Device time is scarce, so the default is ONE timed
batch of 256 prompts: the baseline is "transformers at batch 256".

--max-seconds bounds the timed part: generation stops (through a stopping criterion) once it has
run that long, and the figures are computed from the tokens actually generated.

The last line of stdout is `HF key=value ...` (output_tok_s first).

usage: hf_baseline.py --model DIR [--batch-size 256] [--num-batches 1] [--input-len 128]
           [--output-len 128] [--max-seconds S] [--device cuda] [--json-out FILE]
"""
import argparse
import json
import platform
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="HF model directory")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-batches", type=int, default=1)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="stop generating after this long (0: no limit); report what was measured")
    p.add_argument("--warmup-tokens", type=int, default=-1,
                   help="new tokens of the warm-up generate (default: --output-len)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--attn-implementation", default=None,
                   help="transformers attn_implementation (default: the library's choice)")
    p.add_argument("--json-out", help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.warmup_tokens < 0:
        args.warmup_tokens = args.output_len

    import torch
    import transformers

    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    card = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
    info = {"model": args.model.rstrip("/").split("/")[-1], "card": card, "device": args.device,
            "dtype": args.dtype, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.version.cuda if cuda else None, "python": sys.version.split()[0],
            "batch_size": args.batch_size, "input_len": args.input_len,
            "output_len": args.output_len}
    print("hf_baseline: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)

    t0 = time.perf_counter()
    kw = {}
    if args.attn_implementation:
        kw["attn_implementation"] = args.attn_implementation
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, **kw)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=dtype,
                                                                  **kw)
    model = model.to(args.device).eval()
    if cuda:
        torch.cuda.synchronize()
    info["load_s"] = time.perf_counter() - t0
    info["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    cfg = model.config
    vocab = cfg.vocab_size
    eos = cfg.eos_token_id
    pad = cfg.pad_token_id
    if pad is None:
        pad = eos[0] if isinstance(eos, list) else (eos if eos is not None else 0)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"loaded in {info['load_s']:.1f} s: {n_params / 1e9:.3f} B params, vocab {vocab}, "
          f"attention {info['attn_implementation']}", flush=True)

    gen = torch.Generator().manual_seed(args.seed)

    def prompts(n):
        ids = torch.randint(0, vocab, (n, args.input_len), generator=gen, dtype=torch.long)
        return ids.to(args.device), torch.ones_like(ids, device=args.device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class Deadline(transformers.StoppingCriteria):
        """Stops every sequence once `deadline` (time.perf_counter) has passed."""

        def __init__(self, deadline):
            self.deadline = deadline
            self.hit = False

        def __call__(self, input_ids, scores, **kwargs):
            self.hit = self.hit or time.perf_counter() > self.deadline
            return torch.full((input_ids.shape[0],), self.hit, dtype=torch.bool,
                              device=input_ids.device)

    def generate(ids, mask, new_tokens, stopping=None):
        kw = dict(attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                  max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad)
        if stopping is not None:
            kw["stopping_criteria"] = transformers.StoppingCriteriaList([stopping])
        with torch.inference_mode():
            return model.generate(ids, **kw)

    torch.manual_seed(args.seed)
    ids, mask = prompts(args.batch_size)
    t0 = time.perf_counter()
    generate(ids, mask, args.warmup_tokens)
    sync()
    info["warmup_s"] = time.perf_counter() - t0
    info["warmup_tokens"] = args.warmup_tokens
    print(f"warm-up: batch {args.batch_size} x {args.warmup_tokens} new tokens in "
          f"{info['warmup_s']:.2f} s (untimed)", flush=True)

    generated = 0
    total_steps = 0  # generate steps over all batches (one new token per prompt each)
    prompts_done = 0
    elapsed = 0.0
    batches = 0
    stopped_early = False
    start = time.perf_counter()
    for b in range(args.num_batches):
        ids, mask = prompts(args.batch_size)
        deadline = Deadline(start + args.max_seconds) if args.max_seconds > 0 else None
        sync()
        t0 = time.perf_counter()
        out = generate(ids, mask, args.output_len, deadline)
        sync()
        dt = time.perf_counter() - t0
        new = out.shape[1] - args.input_len
        if deadline is None or not deadline.hit:
            if new != args.output_len:
                raise SystemExit(f"batch {b}: generated {new} tokens, expected {args.output_len}")
        else:
            stopped_early = True
        generated += new * out.shape[0]
        total_steps += new
        prompts_done += out.shape[0]
        elapsed += dt
        batches += 1
        print(f"batch {b}: {out.shape[0]} x {new} new tokens in {dt:.2f} s "
              f"({new * out.shape[0] / dt:.1f} output tokens/s)", flush=True)
        over = args.max_seconds > 0 and time.perf_counter() - start > args.max_seconds
        if stopped_early or over:
            break

    steps = generated / max(prompts_done, 1)  # new tokens per prompt
    info.update({
        "output_tok_s": generated / elapsed,
        "total_tok_s": (generated + prompts_done * args.input_len) / elapsed,
        "requests_per_s": prompts_done / elapsed if not stopped_early else 0.0,
        "elapsed_s": elapsed, "batches": batches, "prompts": prompts_done,
        "output_tokens": generated, "new_tokens_per_prompt": steps,
        "step_ms": elapsed / total_steps * 1e3 if total_steps else 0.0,
        "stopped_early": stopped_early,
        "max_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else 0.0,
    })
    if stopped_early:
        print(f"note: stopped by --max-seconds after {steps:.0f} of {args.output_len} tokens; "
              "figures are for what was generated", flush=True)
    print(f"HF generate: {info['output_tok_s']:.1f} output tokens/s, {info['total_tok_s']:.1f} "
          f"total tokens/s, {info['step_ms']:.2f} ms per step (prefill included)", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(info, f, indent=2)
    order = ["output_tok_s", "total_tok_s", "requests_per_s", "elapsed_s", "step_ms", "batches",
             "prompts", "output_tokens", "batch_size", "input_len", "output_len", "stopped_early",
             "load_s", "max_memory_gb", "model", "card", "dtype", "torch", "transformers", "cuda",
             "attn_implementation"]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        v = str(v)
        return f'"{v}"' if " " in v else v

    print("HF " + " ".join(f"{k}={fmt(info[k])}" for k in order), flush=True)


if __name__ == "__main__":
    main()
